#!/usr/bin/env bash
# build.sh builds the test kube-apiserver and etcd into tools/k8s/bin.
# The binaries are cached outside the checkout, under a directory named by
# the hash of this module's go.sum, so a fresh clone on the same machine
# (CI) skips the ~6 min cold build; a change of versions builds anew.
set -euo pipefail
cd "$(dirname "$0")"
GO=${GO:-go}
key=$(sha256sum go.mod go.sum kube-apiserver/main.go etcd/main.go | sha256sum | cut -c1-16)
cache=${VIGIL_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vigil/k8s}/$key
if [ ! -x "$cache/kube-apiserver" ] || [ ! -x "$cache/etcd" ]; then
	echo "building kube-apiserver and etcd (cache $cache; ~6 min the first time)"
	mkdir -p "$cache.tmp"
	ver=v1.37.2
	ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$ver -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37"
	"$GO" build -trimpath -ldflags "$ldflags" -o "$cache.tmp/kube-apiserver" ./kube-apiserver
	"$GO" build -trimpath -ldflags "-s -w" -o "$cache.tmp/etcd" ./etcd
	rm -rf "$cache" && mv "$cache.tmp" "$cache"
fi
mkdir -p bin
ln -sfn "$cache/kube-apiserver" bin/kube-apiserver
ln -sfn "$cache/etcd" bin/etcd
echo "kube-apiserver and etcd in $(pwd)/bin ($("$cache/kube-apiserver" --version))"
