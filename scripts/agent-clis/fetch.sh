#!/usr/bin/env bash
# fetch.sh: stage Node.js and the coding-agent CLIs for the golden image.
#
#   scripts/agent-clis/fetch.sh OUT_DIR
#
# For each line of manifest.txt: download PACKAGE@VERSION's tarball from
# the npm registry ($BANGER_NPM_REGISTRY, default https://registry.npmjs.org)
# into a cache ($BANGER_NPM_CACHE, default /var/cache/banger-npm), check
# its sha512 against the pinned integrity (a cached file is checked too),
# and only then unpack it into OUT_DIR/node_modules/DIR. "link NAME PATH"
# lines then make OUT_DIR/bin/NAME a relative link to node_modules/PATH,
# which must exist. Nothing from a package is executed on the host.
# $BANGER_AGENT_MANIFEST names another manifest (tests).
set -euo pipefail

out=${1:?usage: fetch.sh OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
registry=${BANGER_NPM_REGISTRY:-https://registry.npmjs.org}
cache=${BANGER_NPM_CACHE:-/var/cache/banger-npm}
mkdir -p "$cache"
rm -rf "$out"
mkdir -p "$out/node_modules" "$out/bin"
manifest=${BANGER_AGENT_MANIFEST:-$here/manifest.txt}
bad() { case "$1" in ''|/*|*..*) return 0 ;; esac; return 1; }

links=()
while read -r dir spec integrity; do
  case "$dir" in ''|'#'*) continue ;; esac
  if [ "$dir" = link ]; then
    case "$spec" in ''|*/*|.*) echo "fetch: bad link name $spec" >&2; exit 1 ;; esac
    bad "$integrity" && { echo "fetch: bad link target $integrity" >&2; exit 1; }
    links+=("$spec" "$integrity")
    continue
  fi
  name=${spec%@*}
  version=${spec##*@}
  case "$integrity" in sha512-*) ;; *) echo "fetch: $spec: integrity must be sha512-..." >&2; exit 1 ;; esac
  bad "$dir" && { echo "fetch: bad directory $dir" >&2; exit 1; }
  file="$cache/$(echo "$name" | tr / _)-$version.tgz"
  url="$registry/$name/-/${name##*/}-$version.tgz"
  want=$(echo "${integrity#sha512-}" | base64 -d | od -An -tx1 -v | tr -d ' \n')
  if [ ! -f "$file" ] || [ "$(sha512sum "$file" | cut -d' ' -f1)" != "$want" ]; then
    echo "fetch: $spec" >&2
    curl -fsSL --retry 3 --max-time 900 -o "$file.part" "$url"
    got=$(sha512sum "$file.part" | cut -d' ' -f1)
    if [ "$got" != "$want" ]; then
      rm -f "$file.part"
      echo "fetch: $spec: sha512 mismatch (want $want, got $got)" >&2
      exit 1
    fi
    mv "$file.part" "$file"
  fi
  mkdir -p "$out/node_modules/$dir"
  # npm tarballs hold one top directory (usually package/): strip it.
  # GNU tar refuses absolute and ../ member names; owners are not kept.
  tar -xzf "$file" -C "$out/node_modules/$dir" --strip-components=1 --no-same-owner --no-same-permissions
done < "$manifest"

set -- "${links[@]}"
while [ $# -ge 2 ]; do
  ln -s "../node_modules/$2" "$out/bin/$1"
  case "$(realpath -e "$out/bin/$1" 2>/dev/null)" in
    "$(realpath "$out/node_modules")"/*) [ -f "$out/bin/$1" ] ;;
    *) false ;;
  esac || { echo "fetch: $1: node_modules/$2 is missing or leads out of node_modules" >&2; exit 1; }
  shift 2
done
echo "fetch: staged in $out" >&2
