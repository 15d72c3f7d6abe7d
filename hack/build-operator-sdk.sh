#!/usr/bin/env bash
# Builds operator-sdk (and, when asked, opm) from the Go module proxy into bin/.
#
# Neither tool can be `go install`ed here: the proxy refuses their version lists, and operator-sdk's own
# module pins github.com/operator-framework/ansible-operator-plugins at a version whose zip is refused. So
# each tool is built as a dependency of a scratch module under bin/.src (never in the project's module),
# with the same build tags and version stamps upstream's release builds use. Outputs are cached: a second
# run with the binary present does nothing. A cold operator-sdk build takes 3-4 minutes on 2 cores.
#
# usage: hack/build-operator-sdk.sh [operator-sdk] [opm]      (default: operator-sdk)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OPERATOR_SDK_VERSION=${OPERATOR_SDK_VERSION:-v1.42.3}
# operator-sdk v1.42.3 requires ansible-operator-plugins v1.42.3, which the proxy refuses; v1.42.2 is API-identical
# for what operator-sdk links (the ansible plugin scaffolding) and is what we replace it with.
ANSIBLE_PLUGINS_VERSION=${ANSIBLE_PLUGINS_VERSION:-v1.42.2}
OPM_VERSION=${OPM_VERSION:-v1.74.0}
KUBE_VERSION_FOR_SDK=${KUBE_VERSION_FOR_SDK:-v1.33.1}   # what upstream stamps into `operator-sdk version`
OUT=${LOCALBIN:-$ROOT/bin}

want=("$@"); [ ${#want[@]} -gt 0 ] || want=(operator-sdk)

# A direct-only proxy list: a fallback to origin servers hangs on machines without general network access.
export GOPROXY=${GOPROXY_BUILD:-$(go env GOPROXY | cut -d, -f1)} GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local
mkdir -p "$OUT"

# build TOOL VERSION MAIN_PACKAGE MODULE LDFLAGS [REPLACE...]
build() {
  local tool=$1 version=$2 pkg=$3 module=$4 ldflags=$5; shift 5
  local bin=$OUT/$tool stamp=$OUT/.$tool.version
  if [ -x "$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
    return 0
  fi
  local src=$OUT/.src/$tool-$version
  mkdir -p "$src"
  cd "$src"
  if [ ! -f .ready ]; then
    echo ">> preparing build module for $tool $version (first run only)"
    rm -f go.mod go.sum tools.go
    {
      echo "module ipvs-operator.dev/$tool-build"
      echo
      echo "go 1.26"
      echo
      echo "require $module $version"
      for r in "$@"; do echo "replace $r"; done
    } > go.mod
    printf '//go:build tools\n\npackage tools\n\nimport _ "%s"\n' "$pkg" > tools.go
    timeout 900 go mod tidy -e >tidy.log 2>&1 || { cat tidy.log; exit 1; }
    touch .ready
  fi
  local t0; t0=$(date +%s)
  echo ">> building $tool $version (cold: a few minutes)"
  go build -trimpath -tags containers_image_openpgp -ldflags "$ldflags" -o "$bin.tmp" "$pkg"
  mv "$bin.tmp" "$bin"
  echo "$version" > "$stamp"
  echo ">> built $tool in $(( $(date +%s) - t0 ))s"
}

for t in "${want[@]}"; do
  case $t in
    operator-sdk)
      v=github.com/operator-framework/operator-sdk/internal/version
      build operator-sdk "$OPERATOR_SDK_VERSION" github.com/operator-framework/operator-sdk/cmd/operator-sdk \
        github.com/operator-framework/operator-sdk \
        "-s -w -X $v.Version=$OPERATOR_SDK_VERSION -X $v.GitVersion=$OPERATOR_SDK_VERSION -X $v.GitCommit=unknown -X $v.KubernetesVersion=$KUBE_VERSION_FOR_SDK -X $v.ImageVersion=$OPERATOR_SDK_VERSION" \
        "github.com/operator-framework/ansible-operator-plugins => github.com/operator-framework/ansible-operator-plugins $ANSIBLE_PLUGINS_VERSION"
      ;;
    opm)
      v=github.com/operator-framework/operator-registry/cmd/opm/version
      build opm "$OPM_VERSION" github.com/operator-framework/operator-registry/cmd/opm \
        github.com/operator-framework/operator-registry \
        "-s -w -X $v.gitCommit=unknown -X $v.opmVersion=$OPM_VERSION"
      ;;
    *) echo "unknown tool: $t (want operator-sdk or opm)" >&2; exit 2 ;;
  esac
done
