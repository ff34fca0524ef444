#!/usr/bin/env bash
# release.sh: build, package and sign a banger release in the layout that
# `banger update` (internal/updater) and scripts/install.sh read.
#
#   scripts/release.sh --version vX.Y.Z --key KEY.pem --out DIR
#       [--base-manifest URL-or-file] [--bin DIR] [--arch ARCH]
#       [--notes TEXT] [--no-latest] [--allow-foreign-key]
#
#   --version            the release version, vMAJOR.MINOR.PATCH[-PRE]
#   --key                the ECDSA P-256 private key (PEM) to sign with; its
#                        public half must be the key built into banger
#                        (internal/updater/key.go) unless --allow-foreign-key
#   --out                the publish directory; gets VERSION/ and manifest.json
#   --base-manifest      the manifest to add the release to (a file or an
#                        http(s) URL); default DIR/manifest.json if it exists
#   --bin                take the four binaries from this directory instead
#                        of building them
#   --arch               GOARCH to build for and name the archive after
#                        (default amd64)
#   --notes              release notes for the manifest
#   --no-latest          do not make this release latest_stable (unless the
#                        manifest has none yet)
#
# Writes:
#   DIR/VERSION/banger-VERSION-linux-ARCH.tar.gz  the four binaries
#   DIR/VERSION/SHA256SUMS                        sha256sum of the archive
#   DIR/VERSION/SHA256SUMS.sig                    openssl dgst -sha256 -sign
#   DIR/manifest.json                             all releases
#   DIR/install.sh                                the one-command installer
# Upload DIR as it is. Needs go (unless --bin), openssl, sha256sum, GNU tar
# and python3.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
binaries=(banger bangerd banger-agent banger-helper)

die() { printf 'release: %s\n' "$*" >&2; exit 1; }
say() { printf '==> %s\n' "$*" >&2; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

version="" key="" out="" base="" bin="" arch=amd64 notes="" latest=1 foreign=0
while [ $# -gt 0 ]; do
  case $1 in
    --version) version=${2:?--version needs a value}; shift 2 ;;
    --key) key=${2:?--key needs a value}; shift 2 ;;
    --out) out=${2:?--out needs a value}; shift 2 ;;
    --base-manifest) base=${2:?--base-manifest needs a value}; shift 2 ;;
    --bin) bin=${2:?--bin needs a value}; shift 2 ;;
    --arch) arch=${2:?--arch needs a value}; shift 2 ;;
    --notes) notes=${2?--notes needs a value}; shift 2 ;;
    --no-latest) latest=0; shift ;;
    --allow-foreign-key) foreign=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[ -n "$version" ] || die "--version is required"
[ -n "$key" ] || die "--key is required"
[ -n "$out" ] || die "--out is required"
[[ $version =~ ^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$ ]] ||
  die "version $version is not vMAJOR.MINOR.PATCH[-PRERELEASE]"
[[ $arch =~ ^[a-z0-9]+$ ]] || die "bad --arch $arch"
[ -r "$key" ] || die "cannot read key $key"
for tool in openssl sha256sum tar gzip python3; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The signing key must be P-256 and, unless told otherwise, the key banger
# verifies with.
openssl pkey -in "$key" -noout -text 2>/dev/null | grep -q 'prime256v1\|P-256' ||
  die "$key is not an ECDSA P-256 private key"
openssl pkey -in "$key" -pubout -out "$work/pub.pem" || die "cannot read the public half of $key"
sed -n '/-----BEGIN PUBLIC KEY-----/,/-----END PUBLIC KEY-----/p' "$root/internal/updater/key.go" |
  sed 's/^.*`//' >"$work/embedded.pem"
embedded=$(openssl pkey -pubin -in "$work/embedded.pem" -outform DER 2>/dev/null | sha256sum) ||
  die "cannot read the public key in internal/updater/key.go"
ours=$(openssl pkey -pubin -in "$work/pub.pem" -outform DER | sha256sum)
if [ "$embedded" != "$ours" ]; then
  [ "$foreign" = 1 ] ||
    die "the public half of $key is not the key built into banger (internal/updater/key.go): binaries would reject this release; use --allow-foreign-key only for tests"
  say "warning: signing with a key banger does not trust (--allow-foreign-key)"
fi

reldir=$out/$version
[ ! -e "$reldir" ] || die "$reldir already exists: a published release is never rebuilt"
archive=banger-$version-linux-$arch.tar.gz

# Binaries: built like `make build`, or taken from --bin.
stage=$work/stage
mkdir -p "$stage"
if [ -z "$bin" ]; then
  command -v go >/dev/null 2>&1 || PATH=$PATH:/usr/local/go/bin
  command -v go >/dev/null 2>&1 || die "go is required to build (or pass --bin)"
  ldflags="-s -w -X main.version=$version"
  say "building $version for linux/$arch"
  for b in "${binaries[@]}"; do
    cgo=()
    [ "$b" = banger-agent ] && cgo=(CGO_ENABLED=0)
    (cd "$root" && env "${cgo[@]}" GOOS=linux GOARCH="$arch" \
      go build -trimpath -ldflags "$ldflags" -o "$stage/$b" "./cmd/$b")
  done
else
  for b in "${binaries[@]}"; do
    [ -f "$bin/$b" ] || die "$bin/$b is missing"
    cp -L "$bin/$b" "$stage/$b"
  done
fi
chmod 0755 "${binaries[@]/#/$stage/}"

# The updater refuses binaries that do not report the release's version;
# catch that here (when they run on this machine).
for b in bangerd banger; do
  if vout=$("$stage/$b" --version 2>&1); then
    grep -qwF -- "$version" <<<"$vout" || die "$b --version says '$vout', not $version"
  else
    say "warning: could not run $b --version here; not checking its version"
  fi
done

say "packaging $archive"
mkdir -p "$reldir"
epoch=${SOURCE_DATE_EPOCH:-$(date +%s)}
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" --format=gnu \
  -C "$stage" -cf - "${binaries[@]}" | gzip -n -9 >"$work/$archive"
(cd "$work" && sha256sum "$archive") >"$work/SHA256SUMS"
openssl dgst -sha256 -sign "$key" -out "$work/SHA256SUMS.sig" "$work/SHA256SUMS"
openssl dgst -sha256 -verify "$work/pub.pem" -signature "$work/SHA256SUMS.sig" "$work/SHA256SUMS" >/dev/null ||
  die "the signature just made does not verify"
mv "$work/$archive" "$work/SHA256SUMS" "$work/SHA256SUMS.sig" "$reldir/"

if [ -z "$base" ] && [ -f "$out/manifest.json" ]; then base=$out/manifest.json; fi
say "writing $out/manifest.json"
python3 - "$out/manifest.json" "$base" "$version" "$archive" "$latest" "$notes" <<'PY'
import datetime, json, os, re, sys, tempfile, urllib.request

dst, base, version, archive, latest, notes = sys.argv[1:7]

def die(msg):
    sys.exit("release: " + msg)

def key(v):
    # Semantic versioning precedence, for sorting newest first.
    m = re.match(r"^v(\d+)\.(\d+)\.(\d+)(?:-(.+))?$", v)
    if not m:
        die("manifest lists a bad version %r" % v)
    pre = m.group(4)
    ids = [(0, int(i), "") if i.isdigit() else (1, 0, i) for i in pre.split(".")] if pre else []
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)), 0 if pre else 1, ids)

manifest = {"schema": 1, "latest_stable": "", "releases": []}
if base:
    try:
        if re.match(r"^https?://", base):
            with urllib.request.urlopen(base, timeout=60) as r:
                manifest = json.load(r)
        else:
            with open(base) as f:
                manifest = json.load(f)
    except Exception as e:
        die("cannot read base manifest %s: %s" % (base, e))
if manifest.get("schema") != 1:
    die("base manifest has schema %r, want 1" % manifest.get("schema"))

releases = [r for r in manifest.get("releases", []) if r.get("version") != version]
if len(releases) != len(manifest.get("releases", [])):
    die("the base manifest already lists %s" % version)
release = {
    "version": version,
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "archive": version + "/" + archive,
    "sha256sums": version + "/SHA256SUMS",
    "signature": version + "/SHA256SUMS.sig",
}
if notes:
    release["notes"] = notes
releases.append(release)
releases.sort(key=lambda r: key(r["version"]), reverse=True)
manifest["releases"] = releases
if latest == "1" or not manifest.get("latest_stable"):
    manifest["latest_stable"] = version

os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(dst)), prefix=".manifest-")
with os.fdopen(fd, "w") as f:
    json.dump(manifest, f, indent=2)
    f.write("\n")
os.chmod(tmp, 0o644)
os.replace(tmp, dst)
PY

cp "$root/scripts/install.sh" "$out/install.sh"
chmod 0755 "$out/install.sh"
say "done: upload $out (release $version, $(cut -d' ' -f1 "$reldir/SHA256SUMS"))"
