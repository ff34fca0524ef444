#!/usr/bin/env bash
# quickstart.sh: set up banger on a fresh Debian/Ubuntu machine and run a
# command in a fresh VM. Idempotent: a second run only re-checks and runs
# the command again.
#
#  1. installs missing packages (QEMU, qemu-img, e2fsprogs, debootstrap, make,
#     and what the tests use)
#  2. installs Go in /usr/local/go when no Go as new as go.mod asks for is
#     found (see install_go)
#  3. builds bin/banger, bin/bangerd, bin/banger-agent
#  4. imports Debian's stock kernel package as kernel "debian"
#  5. builds the default image "debian" with debootstrap (bookworm)
#  6. runs `banger vm run --rm -- ...` in a fresh VM
#
# --build-only stops after step 3.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH

build_only=""
for arg in "$@"; do
  case $arg in
    --build-only) build_only=1 ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "quickstart: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

SUITE=${BANGER_SUITE:-bookworm}
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
say() { printf '==> %s\n' "$*" >&2; }

need=()
# debugfs (e2fsprogs) builds images pulled from registries; the tests also
# use git, ssh, curl, ip (iproute2), openssl, python3 (release scripts) and
# xz (the kernel package's xz decoder is checked against it).
for pair in qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils mkfs.ext4:e2fsprogs debugfs:e2fsprogs \
            debootstrap:debootstrap make:make git:git ssh:openssh-client curl:curl ip:iproute2 \
            openssl:openssl python3:python3 xz:xz-utils; do
  cmd=${pair%%:*} pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || need+=("$pkg")
done
# A static busybox makes the tests' FROM-scratch image (TestScratchImage);
# python3-venv and python3-pytest run the Python SDK's tests (make pyunit,
# TestPythonSDK).
for pkg in busybox-static python3-venv python3-pytest; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${need[@]}" ca-certificates >/dev/null
fi

# Go. go.mod's go line is the oldest Go that builds banger; Debian's own
# golang-go (1.19 on bookworm) is older. When neither PATH nor /usr/local/go
# has a Go that new, install_go fetches that release the way the go command
# fetches a toolchain it lacks: as the module golang.org/toolchain from the Go
# module proxy, checked against the Go checksum database like any module and
# downloaded once into the module cache (so a second run does not download it
# again), using whatever Go is at hand (Debian's golang-go,
# installed if need be). It then installs it in /usr/local/go, where
# go.dev/dl puts Go and where this script, .ci/run and the Makefile look first.
gover=$(sed -n 's/^go \([0-9][0-9.]*\)[[:space:]]*$/\1/p' go.mod)
[ -n "$gover" ] || { echo "quickstart: no go line in go.mod" >&2; exit 1; }

# goversion prints the version of the Go at $1 (1.26.8), or nothing.
goversion() { { "$1" env GOVERSION 2>/dev/null || true; } | sed -n 's/^go\([0-9][0-9.]*\).*/\1/p'; }
# new_enough says whether version $1 is at least go.mod's.
new_enough() { [ -n "$1" ] && [ "$(printf '%s\n%s\n' "$gover" "$1" | sort -V | head -n1)" = "$gover" ]; }

install_go() {
  if [ -e /usr/local/go ]; then
    local old
    old=$(goversion /usr/local/go/bin/go)
    echo "quickstart: /usr/local/go holds ${old:+Go $old, }no Go as new as the $gover go.mod asks for:" \
      "remove it (quickstart then installs Go $gover there) or put a newer Go first on PATH" >&2
    exit 1
  fi
  local boot arch mod out dir
  boot=$(command -v go || true)
  if [ -z "$boot" ]; then
    say "installing Debian's golang-go, to fetch Go $gover with"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends golang-go ca-certificates >/dev/null
    boot=$(command -v go || true)
    [ -n "$boot" ] || { echo "quickstart: golang-go installed no go command" >&2; exit 1; }
  fi
  case $(uname -m) in
    x86_64) arch=amd64 ;;
    aarch64|arm64) arch=arm64 ;;
    *) echo "quickstart: no Go toolchain known for $(uname -m): install Go $gover yourself (https://go.dev/dl/)" >&2; exit 1 ;;
  esac
  mod=golang.org/toolchain@v0.0.1-go$gover.linux-$arch
  say "fetching Go $gover ($mod) from the Go module proxy with $("$boot" version | cut -d' ' -f3)"
  # Outside any module (go.mod's go line is too new for an old go to read),
  # with no GOFLAGS of the caller's.
  if ! out=$(cd / && env -u GOFLAGS GO111MODULE=on GOTOOLCHAIN=local "$boot" mod download -json "$mod" 2>&1); then
    echo "quickstart: fetching $mod failed:" >&2
    printf '%s\n' "$out" >&2
    exit 1
  fi
  dir=$(printf '%s\n' "$out" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
  [ -x "$dir" ] && [ -f "$dir/bin/go" ] || { echo "quickstart: $mod: no toolchain in ${dir:-the download}" >&2; exit 1; }
  say "installing Go $gover in /usr/local/go"
  go_stage=$($sudo mktemp -d /usr/local/.go-$gover.XXXXXX)
  trap '$sudo rm -rf "$go_stage"' EXIT
  $sudo cp -R "$dir/." "$go_stage/"
  # The module cache keeps files read-only and without exec bits: restore
  # them on the commands, as the go command does before it runs a toolchain
  # it downloaded.
  $sudo chmod -R u+w,go-w "$go_stage"
  $sudo chmod 755 "$go_stage"
  $sudo find "$go_stage/bin" "$go_stage/pkg/tool" -type f -exec chmod a+x {} +
  $sudo mv "$go_stage" /usr/local/go
  trap - EXIT
  hash -r
}

have=""
if command -v go >/dev/null 2>&1; then have=$(goversion "$(command -v go)"); fi
if ! new_enough "$have"; then
  install_go
  have=$(goversion /usr/local/go/bin/go)
  new_enough "$have" || { echo "quickstart: the Go installed in /usr/local/go does not run" >&2; exit 1; }
  say "Go $have is in /usr/local/go/bin (make finds it there; add it to your PATH to use go yourself)"
fi

say "building"
make -s build
if [ -n "$build_only" ]; then
  exit 0
fi

banger=bin/banger
cache=${BANGER_FIXTURES:-/var/cache/banger-fixtures}

if ! $banger kernel show debian >/dev/null 2>&1; then
  say "fetching Debian's kernel package"
  $sudo env BANGER_FIXTURES="$cache" scripts/fixtures.sh --kernel-only "$cache" >/dev/null
  say "importing kernel 'debian'"
  $banger kernel import debian --from "$cache/kernel/linux-image.deb"
fi

if ! $banger image show debian >/dev/null 2>&1; then
  say "building image 'debian' with debootstrap $SUITE (a minute or two)"
  if [ -z "$sudo" ]; then
    $banger image build debian --debootstrap "$SUITE" --packages git --kernel debian
  else
    # debootstrap needs root; the image itself belongs to the user.
    tmp=$(mktemp -d)
    $sudo debootstrap --variant=minbase --include=systemd-sysv,ca-certificates,git "$SUITE" "$tmp/tree" >/dev/null
    state=${XDG_STATE_HOME:-$HOME/.local/state}/banger/user-images
    mkdir -p "$state"
    truncate -s 4G "$state/debian.ext4"
    $sudo mkfs.ext4 -q -F -L root -d "$tmp/tree" "$state/debian.ext4"
    $sudo chown "$(id -u):$(id -g)" "$state/debian.ext4"
    $sudo rm -rf "$tmp"
    $banger image register debian --rootfs "$state/debian.ext4" --kernel debian
  fi
fi

say "running a command in a fresh VM"
# No network for the demo: nothing here needs one, and a first run should
# not change the host network (bridge, forwarding) before the user asks.
$banger vm run --rm --image debian --network none -- sh -c 'echo "hello from $(hostname): $(uname -sr), $(nproc) vCPUs"'
