#!/usr/bin/env bash
# Installs the Debian packages the lab needs (qemu for the real-kernel VM, and the tools copied into its
# initramfs). Idempotent: does nothing when everything is present.
set -euo pipefail
pkgs=(qemu-system-x86 busybox-static ipvsadm cpio kmod socat nftables file iproute2 xz-utils conntrack curl iptables ipset netcat-openbsd dash wget)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo ">> installing Debian packages: ${missing[*]}"
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
