#!/usr/bin/env bash
# Builds CoreDNS, the lab's cluster DNS, from the Go module proxy into bin/coredns/<version>/coredns (static,
# CGO_ENABLED=0: it runs in the lab VM). Prebuilt images and downloads are not reachable from every machine we
# run on, so, like hack/build-kube.sh, we build once and cache the result.
#
# The binary carries only the plugins a cluster DNS Corefile uses (PLUGINS below); upstream's main imports
# every plugin, cloud SDKs included, which would make the build much longer for nothing the lab runs. A main
# that imports coremain plus chosen plugins is CoreDNS's documented way to trim a build.
#
# Cache key: the version (the directory) and the plugin list, recorded in coredns.key beside the binary; a
# change of either rebuilds. Cold build: ~5 min on a busy 2-core machine (1.5 min of CPU), 55 MB.
#
# usage: hack/build-coredns.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
COREDNS_VERSION=${COREDNS_VERSION:-1.15.0}
OUT=${COREDNS_BIN_DIR:-$ROOT/bin/coredns/$COREDNS_VERSION}
SRC=$ROOT/bin/.src/coredns-$COREDNS_VERSION
# The plugins a kubeadm Corefile names (errors health ready kubernetes prometheus=metrics forward cache loop
# reload loadbalance), plus log and whoami for debugging.
PLUGINS="errors health ready kubernetes metrics forward cache loop reload loadbalance log whoami"
KEY="coredns v$COREDNS_VERSION plugins: $PLUGINS"
if [ -x "$OUT/coredns" ] && [ "$(cat "$OUT/coredns.key" 2>/dev/null)" = "$KEY" ]; then
  touch "$OUT/coredns" # newer than this script: test/lab's Prepare need not ask again
  exit 0
fi
mkdir -p "$OUT" "$SRC"

# A direct-only proxy list: a fallback to origin servers hangs on machines without general network access.
export GOPROXY=${GOPROXY_BUILD:-$(go env GOPROXY | cut -d, -f1)} GOFLAGS=-mod=mod CGO_ENABLED=0

cd "$SRC"
{
  echo "// Command coredns is CoreDNS with the plugins of a Kubernetes cluster DNS Corefile."
  echo "package main"
  echo
  echo "import ("
  echo "	\"github.com/coredns/coredns/coremain\""
  echo
  for p in $PLUGINS; do
    echo "	_ \"github.com/coredns/coredns/plugin/$p\""
  done
  echo ")"
  echo
  echo "func main() { coremain.Run() }"
} > main.go
if [ ! -f go.sum ] || [ ! -f .ready ]; then
  echo ">> preparing build module for CoreDNS v$COREDNS_VERSION (first run only)"
  rm -f go.mod go.sum
  cat > go.mod <<MOD
module ipvs-operator.dev/coredns-build

go 1.26

require github.com/coredns/coredns v$COREDNS_VERSION
MOD
  timeout 900 go mod tidy >tidy.log 2>&1 || { cat tidy.log; exit 1; }
  touch .ready
fi

t0=$(date +%s)
echo ">> building coredns v$COREDNS_VERSION (cold build ~5 min on a busy 2-core machine)"
go build -trimpath -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=v$COREDNS_VERSION" -o "$OUT/coredns.tmp" .
mv "$OUT/coredns.tmp" "$OUT/coredns"
echo "$KEY" > "$OUT/coredns.key"
echo ">> built coredns in $(( $(date +%s) - t0 ))s"
