#!/usr/bin/env bash
# Generates the OLM bundle (manifests/, metadata/, tests/scorecard/ and bundle.Dockerfile) into OUT_DIR from
# `kustomize build config/manifests`.
#
# `operator-sdk generate bundle` always writes bundle.Dockerfile into its working directory, with COPY lines
# relative to it, and has no flag to put it elsewhere; the top level of this repository is no place for it. So it
# runs in a scratch directory (which only needs the PROJECT file: the project layout goes into the bundle's
# metrics annotations), and bundle.Dockerfile lands inside the bundle with paths relative to the bundle itself:
# build it with `docker build -f bundle/bundle.Dockerfile bundle` (`make bundle-build`).
#
# The CSV's createdAt annotation is the only part that changes on every run; if nothing else changed, the
# existing CSV is kept as it is, so regenerating an up-to-date bundle leaves `git status` clean.
#
# usage: hack/generate-bundle.sh OUT_DIR
# env:   KUSTOMIZE, OPERATOR_SDK (tool paths), VERSION (0.1.0), PACKAGE (ipvs-operator), BUNDLE_METADATA_OPTS
#        (--channels=alpha --default-channel=alpha), BUNDLE_GEN_FLAGS (extra flags for generate bundle)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:?usage: $0 OUT_DIR}
KUSTOMIZE=${KUSTOMIZE:-$ROOT/bin/kustomize}
OPERATOR_SDK=${OPERATOR_SDK:-$ROOT/bin/operator-sdk}
VERSION=${VERSION:-0.1.0}
PACKAGE=${PACKAGE:-ipvs-operator}
BUNDLE_METADATA_OPTS=${BUNDLE_METADATA_OPTS:---channels=alpha --default-channel=alpha}
# The agent's ServiceAccount is not the operator Deployment's: name it so that operator-sdk turns the ClusterRole
# bound to it (config/rbac/agent) into the CSV's clusterPermissions for that account, which OLM then creates.
EXTRA_SERVICE_ACCOUNTS=${EXTRA_SERVICE_ACCOUNTS:-ipvs-operator-agent}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ln -s "$ROOT/PROJECT" "$work/PROJECT"

# operator-sdk reads the manifests from stdin only when it is a pipe.
# shellcheck disable=SC2086 # BUNDLE_METADATA_OPTS and BUNDLE_GEN_FLAGS are lists of flags
"$KUSTOMIZE" build "$ROOT/config/manifests" |
  (cd "$work" && "$OPERATOR_SDK" generate bundle -q --overwrite \
    --version "$VERSION" --package "$PACKAGE" $BUNDLE_METADATA_OPTS \
    --extra-service-accounts "$EXTRA_SERVICE_ACCOUNTS" \
    --kustomize-dir "$ROOT/config/manifests" --output-dir bundle ${BUNDLE_GEN_FLAGS:-}) \
  2>"$work/operator-sdk.log" || { cat "$work/operator-sdk.log" >&2; exit 1; }

# bundle.Dockerfile: from the scratch directory into the bundle, COPY paths relative to the bundle.
sed 's#^COPY bundle/#COPY #' "$work/bundle.Dockerfile" > "$work/bundle/bundle.Dockerfile"
grep -q '^COPY manifests /manifests/$' "$work/bundle/bundle.Dockerfile" || {
  echo "generate-bundle: unexpected COPY lines in bundle.Dockerfile:" >&2; cat "$work/bundle.Dockerfile" >&2; exit 1; }

# Keep the existing CSV (and its createdAt) when nothing but createdAt changed.
csv=manifests/$PACKAGE.clusterserviceversion.yaml
if [ -f "$OUT/$csv" ] && diff -q -I '^    createdAt: ' "$OUT/$csv" "$work/bundle/$csv" >/dev/null; then
  cp -p "$OUT/$csv" "$work/bundle/$csv"
fi

mkdir -p "$OUT"
rm -rf "${OUT:?}/manifests" "${OUT:?}/metadata" "${OUT:?}/tests" "$OUT/bundle.Dockerfile"
cp -R "$work/bundle/." "$OUT/"
echo "Bundle for $PACKAGE $VERSION generated in $OUT"
