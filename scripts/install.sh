#!/usr/bin/env bash
# install.sh: install banger from a signed release.
#
#   curl -fsSL https://releases.example.invalid/banger/install.sh | bash
#   curl -fsSL .../install.sh | bash -s -- --version v0.3.0 --prefix /opt/banger
#
# Options:
#   --version vX.Y.Z   install this release (default: the latest stable one)
#   --prefix DIR       install the binaries into DIR/bin (default /usr/local)
#   --no-services      do not run `banger system install`
#   --owner USER       the user bangerd runs as (default: you, or $SUDO_USER
#                      when run as root through sudo)
#   --yes              do not ask before installing
# Environment:
#   BANGER_INSTALL_BASE_URL        where manifest.json and the releases are
#   BANGER_INSTALL_NONINTERACTIVE  1: do not ask (same as --yes)
#   BANGER_INSTALL_PUBKEY_FILE     verify with this PEM public key instead of
#                                  the one below (for testing)
#
# Everything up to the installation runs as you, without privileges: the
# download, the signature check (openssl, against the public key at the end
# of this script), the sha256 check and the unpacking. Nothing is installed
# unless all of them pass. sudo is used only to write into a directory you
# cannot write to and to set up the systemd services, after you agree.
# Needs curl, openssl, sha256sum, tar, and python3 or jq.
set -euo pipefail

# There is no release hosting yet: this placeholder does not resolve, so
# set BANGER_INSTALL_BASE_URL until it is replaced with the real location.
default_base_url=https://releases.example.invalid/banger

binaries=(banger bangerd banger-agent banger-helper)

die() { printf 'banger install: %s\n' "$*" >&2; exit 1; }
say() { printf 'banger install: %s\n' "$*" >&2; }
# refuse stops on a failed check, before anything is installed.
refuse() { die "$*; nothing was installed"; }

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]:-}" 2>/dev/null ||
  echo "usage: install.sh [--version vX.Y.Z] [--prefix DIR] [--no-services] [--yes]"; }

# release_public_key prints the key releases are signed with. It must be
# byte-identical to ReleasePublicKey in internal/updater/key.go.
release_public_key() {
  cat <<'PUBKEY'
-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEORpP+4LjVpvmKCrC2wRkFF8kre4z
5tmbmiRKhS4VHL9zQTNScMUOYFjxP7a2GgjhiUih2nYaMre1agRQQkIVgA==
-----END PUBLIC KEY-----
PUBKEY
}

# fetch URL FILE downloads URL into FILE.
fetch() {
  curl -fsSL --proto '=https,http' --retry 2 -o "$2" "$1" || refuse "download of $1 failed"
}

# resolve REF prints REF as a URL, resolved against the manifest URL.
resolve() {
  case $1 in
    http://* | https://*) printf '%s\n' "$1" ;;
    /*) printf '%s\n' "$(printf '%s' "$manifest_url" | sed -E 's#^(https?://[^/]+).*#\1#')$1" ;;
    *) printf '%s\n' "${manifest_url%/*}/$1" ;;
  esac
}

# release_fields MANIFEST VERSION prints the release's version, archive,
# sha256sums and signature, one per line, or fails.
release_fields() {
  if command -v python3 >/dev/null 2>&1; then
    python3 - "$1" "$2" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
if m.get("schema") != 1:
    sys.exit("manifest schema %r is not supported" % m.get("schema"))
want = sys.argv[2] or m.get("latest_stable", "")
for r in m.get("releases", []):
    if r.get("version") == want:
        for k in ("version", "archive", "sha256sums", "signature"):
            v = r.get(k, "")
            if not v or "\n" in v:
                sys.exit("release %s has a bad %s" % (want, k))
            print(v)
        sys.exit(0)
sys.exit("release %s not found in manifest (latest is %s)" % (want, m.get("latest_stable")))
PY
  elif command -v jq >/dev/null 2>&1; then
    jq -er --arg v "$2" '
      if .schema != 1 then error("manifest schema \(.schema) is not supported") else . end
      | (if $v == "" then .latest_stable else $v end) as $want
      | [.releases[] | select(.version == $want)] as $found
      | if ($found | length) == 0
        then error("release \($want) not found in manifest (latest is \(.latest_stable))")
        else $found[0] | .version, .archive, .sha256sums, .signature end' "$1"
  else
    die "python3 or jq is needed to read the release manifest"
  fi
}

# verify_signature PUBKEY SIG FILE checks an ECDSA signature of FILE, in DER
# (openssl) or base64 DER (cosign).
verify_signature() {
  openssl dgst -sha256 -verify "$1" -signature "$2" "$3" >/dev/null 2>&1 && return 0
  base64 -d <"$2" >"$2.der" 2>/dev/null &&
    openssl dgst -sha256 -verify "$1" -signature "$2.der" "$3" >/dev/null 2>&1
}

# writable DIR: can we create DIR's entries, or DIR itself, without root?
writable() {
  local d=$1
  while [ ! -e "$d" ]; do d=$(dirname "$d"); done
  [ -d "$d" ] && [ -w "$d" ]
}

main() {
  local version="" prefix=/usr/local services=1 assume_yes=0 owner=
  while [ $# -gt 0 ]; do
    case $1 in
      --version) version=${2:?--version needs a value}; shift 2 ;;
      --version=*) version=${1#*=}; shift ;;
      --prefix) prefix=${2:?--prefix needs a value}; shift 2 ;;
      --prefix=*) prefix=${1#*=}; shift ;;
      --no-services) services=0; shift ;;
      --owner) owner=${2:?--owner needs a value}; shift 2 ;;
      --owner=*) owner=${1#*=}; shift ;;
      -y | --yes) assume_yes=1; shift ;;
      -h | --help) usage; exit 0 ;;
      *) die "unknown argument $1 (try --help)" ;;
    esac
  done
  if [ "${BANGER_INSTALL_NONINTERACTIVE:-}" = 1 ]; then assume_yes=1; fi
  case $prefix in /*) ;; *) prefix=$PWD/$prefix ;; esac
  case $version in
    "" | latest) version="" ;;
    v*) ;;
    *) version=v$version ;;
  esac
  for tool in curl openssl sha256sum tar; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
  done
  [ "$(uname -s)" = Linux ] || die "banger runs on Linux only"

  local base_url=${BANGER_INSTALL_BASE_URL:-$default_base_url}
  manifest_url=${base_url%/}/manifest.json

  local tmp
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/banger-install.XXXXXX")
  # shellcheck disable=SC2064 # expand $tmp now
  trap "rm -rf '$tmp'" EXIT

  # 1. Which release, and its files. All unprivileged.
  say "reading $manifest_url"
  fetch "$manifest_url" "$tmp/manifest.json"
  local fields
  fields=$(release_fields "$tmp/manifest.json" "$version") || refuse "cannot use $manifest_url"
  local rel_version archive_ref sums_ref sig_ref
  { read -r rel_version; read -r archive_ref; read -r sums_ref; read -r sig_ref; } <<<"$fields"
  local archive_url sums_url sig_url archive_name
  archive_url=$(resolve "$archive_ref")
  sums_url=$(resolve "$sums_ref")
  sig_url=$(resolve "$sig_ref")
  archive_name=${archive_url##*/}
  archive_name=${archive_name%%[?#]*}
  [ -n "$archive_name" ] || refuse "release $rel_version has no archive file name"

  # 2. The signature of SHA256SUMS, then the archive's sha256.
  say "verifying the signature of banger $rel_version"
  fetch "$sums_url" "$tmp/SHA256SUMS"
  fetch "$sig_url" "$tmp/SHA256SUMS.sig"
  local pubkey=${BANGER_INSTALL_PUBKEY_FILE:-}
  if [ -z "$pubkey" ]; then
    pubkey=$tmp/release-key.pem
    release_public_key >"$pubkey"
  fi
  verify_signature "$pubkey" "$tmp/SHA256SUMS.sig" "$tmp/SHA256SUMS" ||
    refuse "signature check failed: SHA256SUMS of $rel_version is not signed by the banger release key"

  say "downloading $archive_url"
  fetch "$archive_url" "$tmp/$archive_name"
  local want got
  want=$(awk -v f="$archive_name" '$2 == f || $2 == "*" f || $2 == "./" f { print tolower($1) }' "$tmp/SHA256SUMS" | sort -u)
  [ -n "$want" ] || refuse "SHA256SUMS has no line for $archive_name"
  [ "$(printf '%s\n' "$want" | wc -l)" -eq 1 ] || refuse "SHA256SUMS lists $archive_name twice"
  got=$(sha256sum "$tmp/$archive_name" | cut -d' ' -f1)
  [ "$got" = "$want" ] ||
    refuse "archive checksum mismatch: $archive_name has sha256 $got, SHA256SUMS says $want"

  # 3. Unpack exactly the four binaries (regular files, top level).
  local x=$tmp/x listing members=() line name b
  local -A seen=()
  mkdir "$x"
  listing=$(tar -tvzf "$tmp/$archive_name") || refuse "cannot read $archive_name"
  while IFS= read -r line; do
    [ -n "$line" ] || continue
    case $line in -*) ;; *) refuse "$archive_name holds something that is not a regular file: $line" ;; esac
  done <<<"$listing"
  while IFS= read -r name; do
    [ -n "$name" ] || continue
    b=${name#./}
    case " ${binaries[*]} " in *" $b "*) ;; *) refuse "$archive_name holds an unexpected file: $name" ;; esac
    [ -z "${seen[$b]:-}" ] || refuse "$archive_name holds $b twice"
    seen[$b]=1
    members+=("$name")
  done < <(tar -tzf "$tmp/$archive_name" 2>/dev/null)
  for b in "${binaries[@]}"; do
    [ -n "${seen[$b]:-}" ] || refuse "$archive_name lacks $b"
  done
  tar -xzf "$tmp/$archive_name" -C "$x" --no-same-owner -- "${members[@]}"
  chmod 0755 "${binaries[@]/#/$x/}"
  # The binaries must say they are the release the manifest names (when
  # they can run here; a noexec temporary directory prevents that).
  local vout
  if vout=$("$x/bangerd" --version 2>&1); then
    grep -qwF -- "$rel_version" <<<"$vout" ||
      refuse "bangerd in $archive_name reports '$vout', not $rel_version"
  fi

  # 4. Say what happens and why root is needed; ask.
  local bindir=${prefix%/}/bin
  [ -n "${prefix%/}" ] || bindir=/bin
  local use_sudo=0 systemd=0 is_root=0 why=()
  [ "$(id -u)" = 0 ] && is_root=1
  if [ "$services" = 1 ] && [ -d /run/systemd/system ]; then systemd=1; fi
  if [ "$is_root" = 0 ]; then
    if ! writable "$bindir"; then
      use_sudo=1
      why+=("$bindir is not writable by $(id -un)")
    fi
    if [ "$systemd" = 1 ]; then
      why+=("setting up system services (units in /etc/systemd/system, a root network helper) needs root")
    fi
    if [ ${#why[@]} -gt 0 ] && ! command -v sudo >/dev/null 2>&1; then
      die "root is needed (${why[*]}) but sudo is not installed: run this as root"
    fi
  fi

  {
    echo
    echo "banger $rel_version is verified (signature and sha256). This will write:"
    for b in "${binaries[@]}"; do echo "  $bindir/$b"; done
    echo "replacing any files already there."
    if [ "$systemd" = 1 ]; then
      echo "Then it will run '$bindir/banger system install' to set up and start the"
      echo "two systemd services: bangerd (the daemon) and banger-helper (the root"
      echo "network helper)."
    elif [ "$services" = 1 ]; then
      echo "systemd is not running here, so no services are set up."
    fi
    if [ ${#why[@]} -gt 0 ]; then
      echo "This uses sudo because:"
      for line in "${why[@]}"; do echo "  - $line"; done
    fi
    echo
  } >&2

  if [ "$assume_yes" != 1 ]; then
    if ! (exec </dev/tty) 2>/dev/null; then
      die "no terminal to ask for confirmation: rerun with BANGER_INSTALL_NONINTERACTIVE=1 (or --yes) to install without asking"
    fi
    local answer=""
    printf 'Proceed? [y/N] ' >/dev/tty
    read -r answer </dev/tty || answer=""
    case $answer in
      y | Y | yes | YES | Yes) ;;
      *) die "not installing" ;;
    esac
  fi

  # 5. Install: copy next to the target, then rename over it.
  as_root() { if [ "$use_sudo" = 1 ]; then sudo "$@"; else "$@"; fi; }
  as_root mkdir -p "$bindir"
  for b in "${binaries[@]}"; do
    as_root install -m 0755 "$x/$b" "$bindir/.$b.new.$$"
    as_root mv -f "$bindir/.$b.new.$$" "$bindir/$b"
    say "installed $bindir/$b"
  done

  if [ "$systemd" = 1 ]; then
    say "running banger system install"
    # The services run the binaries just installed; bangerd runs as the
    # owner: the invoking user, or whoever ran sudo.
    local args=(system install --bin-dir "$bindir")
    if [ -n "$owner" ]; then
      args+=(--owner "$owner")
    elif [ "$is_root" = 0 ]; then
      args+=(--owner "$(id -un)")
    fi
    if [ "$is_root" = 1 ]; then
      "$bindir/banger" "${args[@]}"
    else
      sudo "$bindir/banger" "${args[@]}"
    fi
  fi

  case ":$PATH:" in
    *":$bindir:"*) ;;
    *) say "note: $bindir is not on your PATH" ;;
  esac
  say "banger $rel_version is installed"
}

# Everything runs from here, so a truncated download does nothing.
main "$@"
