#!/usr/bin/env bash
# Builds the benchmark's load generator (tools/loadgen: a Go program with no
# dependencies) into a cache outside the repo:
#
#   ${KBP_CACHE:-$HOME/.cache/kbp}/loadgen/loadgen
#
# and skips the build when the binary there was built from the same sources
# (recorded in .stamp). Prints the binary's path on stdout (progress goes to
# stderr). Exit status 3 means Go is missing and nothing usable is cached.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
src="$root/tools/loadgen"
cache="${KBP_CACHE:-$HOME/.cache/kbp}/loadgen"
log() { echo "loadgen: $*" >&2; }

key=$( (cat "$src/go.mod" "$src"/*.go "$0"; go version 2>/dev/null || true) | sha256sum | cut -c1-16)
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

if [ "$(cat "$cache/.stamp" 2>/dev/null)" = "$key" ] && [ -x "$cache/loadgen" ]; then
  echo "$cache/loadgen"
  exit 0
fi
if ! command -v go >/dev/null; then
  log "go is not installed; cannot build the load generator"
  exit 3
fi
log "building into $cache"
(cd "$src" && CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-trimpath -buildvcs=false" go build -ldflags "-s -w" -o "$cache/loadgen.tmp" .)
mv "$cache/loadgen.tmp" "$cache/loadgen"
echo "$key" >"$cache/.stamp"
echo "$cache/loadgen"
