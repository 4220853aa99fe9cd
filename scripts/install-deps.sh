#!/usr/bin/env bash
# Install the Debian packages kbp needs to build, test and demo, only those missing.
set -euo pipefail
pkgs=(clang llvm libbpf-dev libelf-dev zlib1g-dev pkg-config cmake make g++ iproute2 bpftool iptables openssl ethtool)
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
# The addon builds against Node's own headers (cmake-js is pointed at them, so
# nothing is downloaded); Debian ships them in libnode-dev.
prefix=$(node -p "require('path').resolve(process.execPath, '../..')")
if [ ! -f "$prefix/include/node/node_api.h" ]; then
  if [ "$prefix" = /usr ] && ! dpkg-query -W -f='${Status}' libnode-dev 2>/dev/null | grep -q "install ok installed"; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends libnode-dev
  fi
  [ -f "$prefix/include/node/node_api.h" ] || { echo "install-deps: Node's headers are missing ($prefix/include/node/node_api.h); install them for this Node build" >&2; exit 1; }
fi
