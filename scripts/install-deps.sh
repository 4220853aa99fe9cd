#!/usr/bin/env bash
# Install the Debian packages kbp needs to build, test and demo, only those missing.
set -euo pipefail
pkgs=(clang llvm libbpf-dev libelf-dev zlib1g-dev pkg-config cmake make g++ iproute2 bpftool iptables)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
command -v node >/dev/null || { echo "install-deps: node (>= 20) is required" >&2; exit 1; }
