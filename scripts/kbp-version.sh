#!/usr/bin/env bash
# Builds an earlier kbp from this repository's git history, for the upgrade
# test (test/upgrade): the commit's tree is exported with `git archive` and
# built with its own Makefile (bpf objects, addon, dist) into a cache outside
# the repo:
#
#   ${KBP_CACHE:-$HOME/.cache/kbp}/versions/<commit>/{bin/kbp.js,dist,build}
#
# A finished build is marked by .stamp and reused. The old tree gets this
# checkout's node_modules (a symlink, re-pointed on every call): the old
# package.json's dependencies are a subset of today's, so nothing is fetched.
# Prints the folder on stdout (progress goes to stderr).
#
# Usage: scripts/kbp-version.sh COMMIT
# Exit status 4: the commit is not in the local history (a shallow clone:
# `git fetch --unshallow`).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
log() { echo "kbp-version: $*" >&2; }
[ $# -eq 1 ] || { log "usage: $0 COMMIT"; exit 2; }

commit=$(git -C "$root" rev-parse --verify --quiet "$1^{commit}") || {
  log "commit $1 is not in the git history of $root (shallow clone? git fetch --unshallow)"
  exit 4
}
cache="${KBP_CACHE:-$HOME/.cache/kbp}/versions"
dir="$cache/$commit"

if [ -f "$dir/.stamp" ]; then
  ln -sfn "$root/node_modules" "$dir/node_modules"
  echo "$dir"
  exit 0
fi

mkdir -p "$cache"
tmp=$(mktemp -d "$cache/.build-${commit:0:12}.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
log "building $commit into $dir (bpf, addon, dist; takes a few minutes once)"
git -C "$root" archive "$commit" | tar -x -C "$tmp"
ln -s "$root/node_modules" "$tmp/node_modules"
# The deps target (apt, npm ci) is left out: this machine already has what
# today's build needs, and node_modules is today's; -o keeps make from ever
# running npm ci into that shared folder.
nice make -C "$tmp" -o node_modules/.package-lock.json bpf addon ts >&2
date -u +%FT%TZ >"$tmp/.stamp"
rm -rf "$dir"
mv "$tmp" "$dir"
trap - EXIT
ln -sfn "$root/node_modules" "$dir/node_modules"
echo "$dir"
