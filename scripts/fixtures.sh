#!/usr/bin/env bash
# fixtures.sh: fetch the test/e2e fixtures into a cache outside the repo.
#
#   scripts/fixtures.sh [--kernel-only] [CACHE_DIR]
#
# Produces, idempotently (a second run is a no-op):
#   CACHE_DIR/kernel/linux-image.deb   Debian's current stock kernel package
#   CACHE_DIR/rootfs/                  a debootstrap'd bookworm minbase tree
#                                      (systemd, sshd, git, busybox for test servers,
#                                      kmod for guests that load modules)
# Default CACHE_DIR: $BANGER_FIXTURES or /var/cache/banger-fixtures.
set -euo pipefail

kernel_only=false
if [ "${1:-}" = "--kernel-only" ]; then kernel_only=true; shift; fi
cache=${1:-${BANGER_FIXTURES:-/var/cache/banger-fixtures}}
suite=${BANGER_SUITE:-bookworm}
mkdir -p "$cache/kernel"

if [ ! -s "$cache/kernel/linux-image.deb" ]; then
  echo "fixtures: downloading the Debian kernel package" >&2
  tmp=$(mktemp -d "$cache/kernel/dl.XXXXXX")
  # linux-image-amd64 is a metapackage; its dependency is the real package.
  if ! apt-cache show linux-image-amd64 >/dev/null 2>&1; then apt-get update -qq; fi
  real=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  if [ -z "$real" ]; then
    echo "fixtures: cannot resolve linux-image-amd64 (run apt-get update)" >&2
    exit 1
  fi
  (cd "$tmp" && apt-get download "$real" >/dev/null)
  mv "$tmp"/*.deb "$cache/kernel/linux-image.deb"
  rm -rf "$tmp"
fi

# Bump when the package list changes: a cached tree of another version is
# rebuilt.
version=3
if ! $kernel_only && [ "$(cat "$cache/rootfs.complete" 2>/dev/null)" != "$version" ]; then
  echo "fixtures: debootstrap $suite (about a minute)" >&2
  rm -rf "$cache/rootfs.tmp"
  debootstrap --variant=minbase \
    --include=systemd-sysv,openssh-server,iproute2,ca-certificates,git,udev,busybox,kmod \
    "$suite" "$cache/rootfs.tmp" "${BANGER_MIRROR:-http://deb.debian.org/debian}" >"$cache/debootstrap.log" 2>&1 || {
      tail -20 "$cache/debootstrap.log" >&2; exit 1; }
  rm -rf "$cache/rootfs"
  mv "$cache/rootfs.tmp" "$cache/rootfs"
  echo "$version" > "$cache/rootfs.complete"
fi
echo "$cache"
