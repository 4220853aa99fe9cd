#!/usr/bin/env bash
# Builds kustomize (the real one, sigs.k8s.io/kustomize/kustomize/v5) from the
# Go module proxy into a cache outside the repo and prints the binary's path:
#
#   ${KBP_CACHE:-$HOME/.cache/kbp}/kustomize/<version>/kustomize
#
# deploy/ is rendered with it by test/deploy (and by hand: `$(scripts/kustomize.sh)
# build deploy/overlays/xdp`). Reused while the stamp matches this script.
# Exit status 3: Go is missing and nothing is cached (tests skip on it).
set -euo pipefail

version=v5.8.0
cache="${KBP_CACHE:-$HOME/.cache/kbp}/kustomize/$version"
key=$(sha256sum "$0" | cut -c1-16)
log() { echo "kustomize: $*" >&2; }

mkdir -p "$(dirname "$cache")"
exec 9>"$cache.lock"
flock 9

if [ -x "$cache/kustomize" ] && [ "$(cat "$cache/.stamp" 2>/dev/null)" = "$key" ]; then
  echo "$cache/kustomize"
  exit 0
fi
if ! command -v go >/dev/null; then
  log "go is not installed; cannot build kustomize $version"
  exit 3
fi
log "building kustomize $version into $cache"
tmp="$cache.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS
GOBIN="$tmp" CGO_ENABLED=0 GOFLAGS="${GOFLAGS:+$GOFLAGS }-trimpath" go install -ldflags "-s -w" "sigs.k8s.io/kustomize/kustomize/v5@$version"
echo "$key" >"$tmp/.stamp"
rm -rf "$cache"
mv "$tmp" "$cache"
trap - EXIT
log "built in $((SECONDS - start)) s"
echo "$cache/kustomize"
