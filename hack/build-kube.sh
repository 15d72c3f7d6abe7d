#!/usr/bin/env bash
# Builds the Kubernetes control-plane binaries (and etcd) that envtest and the lab need, from the Go module
# proxy, into bin/k8s/<version>/. Prebuilt downloads are not reachable from every machine we run on, so we
# build from source once and cache the result: the output directory doubles as KUBEBUILDER_ASSETS.
#
# usage: hack/build-kube.sh [binary...]   (default: etcd kube-apiserver kubectl kube-controller-manager kube-scheduler
#        kube-proxy; kube-proxy is the scale harness's peer, see test/bench)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
KUBE_VERSION=${KUBE_VERSION:-1.37.1}
ETCD_VERSION=${ETCD_VERSION:-3.6.16}
OUT=${KUBE_BIN_DIR:-$ROOT/bin/k8s/$KUBE_VERSION}
SRC=$ROOT/bin/.src/kube-$KUBE_VERSION
want=("$@"); [ ${#want[@]} -gt 0 ] || want=(etcd kube-apiserver kubectl kube-controller-manager kube-scheduler kube-proxy)
mkdir -p "$OUT" "$SRC"

missing=()
for b in "${want[@]}"; do [ -x "$OUT/$b" ] || missing+=("$b"); done
[ ${#missing[@]} -gt 0 ] || exit 0

# A direct-only proxy list: a fallback to origin servers hangs on machines without general network access.
export GOPROXY=${GOPROXY_BUILD:-$(go env GOPROXY | cut -d, -f1)} GOFLAGS=-mod=mod CGO_ENABLED=0

cd "$SRC"
if [ ! -f go.sum ] || [ ! -f .ready ]; then
  echo ">> preparing build module for Kubernetes v$KUBE_VERSION and etcd v$ETCD_VERSION (first run only)"
  rm -f go.mod go.sum
  go mod init ipvs-operator.dev/kube-build >/dev/null 2>&1
  # k8s.io/kubernetes pins its staging modules to v0.0.0 with replace directives pointing into its own tree;
  # a consumer must replace every one of them by the published v0.x version.
  timeout 600 go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" > kube.json
  kdir=$(sed -n 's/.*"Dir": "\(.*\)",/\1/p' kube.json)
  staging=$(awk '/^replace|^\t*k8s.io\/.* => \.\/staging/{print}' "$kdir/go.mod" | grep -oE 'k8s.io/[a-z0-9-]+ => ./staging' | awk '{print $1}' | sort -u)
  minor=${KUBE_VERSION#1.}
  {
    echo "module ipvs-operator.dev/kube-build"
    echo
    echo "go 1.26"
    echo
    echo "require ("
    echo "  k8s.io/kubernetes v$KUBE_VERSION"
    echo "  go.etcd.io/etcd/server/v3 v$ETCD_VERSION"
    echo ")"
    echo
    echo "replace ("
    for m in $staging; do echo "  $m => $m v0.$minor"; done
    echo ")"
  } > go.mod
  cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  timeout 900 go mod tidy -e >/dev/null 2>tidy.log || { cat tidy.log; exit 1; }
  touch .ready
fi

ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${KUBE_VERSION#1.}"
ldflags="${ldflags%.*}"   # gitMinor is "37", not "37.1"
for b in "${missing[@]}"; do
  t0=$(date +%s)
  echo ">> building $b (cold builds take minutes: kube-apiserver ~9 min on 2 cores)"
  case $b in
    etcd) go build -trimpath -ldflags "-s -w" -o "$OUT/etcd.tmp" go.etcd.io/etcd/server/v3 ;;
    *)    go build -trimpath -ldflags "$ldflags" -o "$OUT/$b.tmp" "k8s.io/kubernetes/cmd/$b" ;;
  esac
  mv "$OUT/$b.tmp" "$OUT/$b"
  echo ">> built $b in $(( $(date +%s) - t0 ))s"
done
