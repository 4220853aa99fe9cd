#!/usr/bin/env bash
# Builds the real kube-apiserver, kube-proxy and etcd from the published Go
# modules (tools/k8s) into a cache outside the repo:
#
#   ${KBP_CACHE:-$HOME/.cache/kbp}/k8s/<k8s version>/{kube-apiserver,kube-proxy,etcd}
#
# and skips the build when the binaries there were built from the same go.mod,
# go.sum and wrapper sources (recorded in .stamp). Prints the folder on stdout
# (progress goes to stderr), so callers can do `dir=$(scripts/k8s-bins.sh)`.
#
# The version variables are set the way Kubernetes' hack/lib/version.sh sets
# them, so /version and `--version` report the real release. The module proxy
# does not carry the release's git commit, so gitCommit is left empty.
#
# Exit status 3 means Go is missing and nothing usable is cached (tests skip on
# it); anything else non-zero is a build failure.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
mod="$root/tools/k8s"
log() { echo "k8s-bins: $*" >&2; }

version=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v1\./ { print $2; exit }' "$mod/go.mod")
[ -n "$version" ] || { log "no k8s.io/kubernetes requirement in $mod/go.mod"; exit 1; }
staging="v0.${version#v1.}"
# Every replace must point at the staging release that matches k8s.io/kubernetes.
if grep -E '^\s+k8s\.io/[a-z-]+ => k8s\.io/[a-z-]+ v' "$mod/go.mod" | grep -vq " $staging\$"; then
  log "replace lines in $mod/go.mod do not all map to $staging"
  exit 1
fi

cache="${KBP_CACHE:-$HOME/.cache/kbp}/k8s/$version"
key=$(cat "$mod/go.mod" "$mod/go.sum" "$mod"/cmd/*/*.go "$0" | sha256sum | cut -c1-16)
bins=(kube-apiserver kube-proxy etcd)

# One build at a time per version (parallel test runs, cluster-up).
mkdir -p "$(dirname "$cache")"
exec 9>"$cache.lock"
flock 9

fresh=1
[ "$(cat "$cache/.stamp" 2>/dev/null)" = "$key" ] || fresh=0
for b in "${bins[@]}"; do [ -x "$cache/$b" ] || fresh=0; done
if [ "$fresh" = 1 ]; then
  log "reusing $cache ($version)"
  echo "$cache"
  exit 0
fi

if ! command -v go >/dev/null; then
  log "go is not installed; cannot build kube-apiserver/etcd (install Go >= 1.25)"
  exit 3
fi

IFS=. read -r major minor _ <<<"${version#v}"
# The release date, from the module proxy's metadata, doubles as the build date
# so the binaries do not depend on when they were built.
info=$(cd "$mod" && go mod download -json k8s.io/kubernetes | sed -n 's/.*"Info": "\(.*\)".*/\1/p')
date=$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$info" 2>/dev/null || true)
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitCommit= -X $pkg.gitTreeState=clean -X $pkg.buildDate=${date:-1970-01-01T00:00:00Z}"
done

log "building $version (kube-apiserver, kube-proxy, etcd) into $cache; a cold build takes many minutes"
tmp="$cache.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS
(
  cd "$mod"
  export GOFLAGS="${GOFLAGS:+$GOFLAGS }-trimpath -mod=readonly" CGO_ENABLED=0
  go build -ldflags "$ldflags" -o "$tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
  go build -ldflags "$ldflags" -o "$tmp/kube-proxy" k8s.io/kubernetes/cmd/kube-proxy
  go build -ldflags "-s -w" -o "$tmp/etcd" ./cmd/etcd
)
echo "$key" >"$tmp/.stamp"
rm -rf "$cache"
mv "$tmp" "$cache"
trap - EXIT
log "built in $((SECONDS - start)) s: $("$cache/kube-apiserver" --version)"
echo "$cache"
