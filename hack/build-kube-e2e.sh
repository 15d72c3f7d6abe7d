#!/usr/bin/env bash
# Builds Kubernetes' own e2e suite (e2e.test, a compiled test binary of k8s.io/kubernetes/test/e2e) and the
# program of its pod image (agnhost) from the Go module proxy, into bin/k8s/<version>/, for `make test-upstream`.
# Like hack/build-kube.sh it builds once and caches: a second run with both binaries present does nothing.
# It uses a scratch module of its own (bin/.src/kube-e2e-<version>) so that the e2e suite's extra test
# dependencies never touch the control-plane build's go.sum.
#
# usage: hack/build-kube-e2e.sh [e2e.test] [agnhost]   (default: both)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
KUBE_VERSION=${KUBE_VERSION:-1.37.1}
OUT=${KUBE_BIN_DIR:-$ROOT/bin/k8s/$KUBE_VERSION}
SRC=$ROOT/bin/.src/kube-e2e-$KUBE_VERSION
want=("$@"); [ ${#want[@]} -gt 0 ] || want=(e2e.test agnhost regression-issue-74839)
mkdir -p "$OUT" "$SRC"

missing=()
for b in "${want[@]}"; do [ -x "$OUT/$b" ] || missing+=("$b"); done
[ ${#missing[@]} -gt 0 ] || exit 0

# A direct-only proxy list: a fallback to origin servers hangs on machines without general network access.
export GOPROXY=${GOPROXY_BUILD:-$(go env GOPROXY | cut -d, -f1)} GOFLAGS=-mod=mod CGO_ENABLED=0

cd "$SRC"
if [ ! -f .ready ]; then
  echo ">> preparing the e2e build module for Kubernetes v$KUBE_VERSION (first run only)"
  rm -f go.mod go.sum
  timeout 600 go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" > kube.json
  kdir=$(sed -n 's/.*"Dir": "\(.*\)",/\1/p' kube.json)
  # k8s.io/kubernetes pins its staging modules to v0.0.0 with replace directives into its own tree; a
  # consumer must replace every one of them by the published v0.x version.
  staging=$(grep -oE 'k8s.io/[a-z0-9-]+ => ./staging' "$kdir/go.mod" | awk '{print $1}' | sort -u)
  minor=${KUBE_VERSION#1.}
  {
    echo "module ipvs-operator.dev/kube-e2e-build"
    echo
    echo "go 1.26"
    echo
    echo "require k8s.io/kubernetes v$KUBE_VERSION"
    echo
    echo "replace ("
    for m in $staging; do echo "  $m => $m v0.$minor"; done
    echo ")"
  } > go.mod
  cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/test/e2e"
	_ "k8s.io/kubernetes/test/images/agnhost"
	_ "k8s.io/kubernetes/test/images/regression-issue-74839"
)
GO
  timeout 900 go mod tidy -e >/dev/null 2>tidy.log || { cat tidy.log; exit 1; }
  touch .ready
fi

for b in "${missing[@]}"; do
  t0=$(date +%s)
  case $b in
    e2e.test)
      echo ">> building e2e.test (cold ~7 min on 2 cores)"
      # The suite's own TestE2E and its flags live in the package's _test.go files: compile it as a test binary.
      # -vet=off: go test -c would vet every package of the suite, which is upstream's job, not ours.
      go test -c -vet=off -trimpath -ldflags "-s -w" -o "$OUT/e2e.test.tmp" k8s.io/kubernetes/test/e2e ;;
    agnhost)
      echo ">> building agnhost (cold ~3 min on 2 cores)"
      go build -trimpath -ldflags "-s -w" -o "$OUT/agnhost.tmp" k8s.io/kubernetes/test/images/agnhost ;;
    regression-issue-74839)
      # The Conntrack "invalid conntrack state" spec's boom-server: it injects out-of-window TCP packets.
      echo ">> building regression-issue-74839 (seconds once agnhost's dependencies are built)"
      go build -trimpath -ldflags "-s -w" -o "$OUT/$b.tmp" k8s.io/kubernetes/test/images/regression-issue-74839 ;;
    *) echo "unknown binary $b" >&2; exit 2 ;;
  esac
  mv "$OUT/$b.tmp" "$OUT/$b"
  echo ">> built $b in $(( $(date +%s) - t0 ))s"
done
