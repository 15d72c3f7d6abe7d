#!/usr/bin/env bash
# Fails unless bundle/ is exactly what hack/generate-bundle.sh makes from the current tree (the CSV's createdAt
# aside) and `operator-sdk bundle validate` with the operatorframework suite reports no error.
#
# usage: hack/check-bundle.sh [BUNDLE_DIR]     (default: bundle)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUNDLE=${1:-$ROOT/bundle}
OPERATOR_SDK=${OPERATOR_SDK:-$ROOT/bin/operator-sdk}

fresh=$(mktemp -d)
trap 'rm -rf "$fresh"' EXIT
"$ROOT/hack/generate-bundle.sh" "$fresh" >/dev/null

if ! diff -r -u -I '^    createdAt: ' "$BUNDLE" "$fresh"; then
  echo >&2
  echo "check-bundle: $BUNDLE is stale: run 'make bundle' and commit the result." >&2
  exit 1
fi
echo "check-bundle: $BUNDLE is up to date"

# Validate the committed bundle. The CLI exits non-zero on errors; warnings are printed and allowed.
out=$("$OPERATOR_SDK" bundle validate "$BUNDLE" --select-optional suite=operatorframework 2>&1) || {
  echo "$out" >&2; exit 1; }
echo "$out"
