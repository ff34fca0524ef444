#!/usr/bin/env bash
# quickstart.sh: set up banger on a fresh Debian/Ubuntu machine and run a
# command in a fresh VM. Idempotent: a second run only re-checks and runs
# the command again.
#
#  1. installs missing packages (QEMU, qemu-img, e2fsprogs, debootstrap, make,
#     and what the tests use)
#  2. builds bin/banger, bin/bangerd, bin/banger-agent
#  3. imports Debian's stock kernel package as kernel "debian"
#  4. builds the default image "debian" with debootstrap (bookworm)
#  5. runs `banger vm run --rm -- ...` in a fresh VM
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH

SUITE=${BANGER_SUITE:-bookworm}
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
say() { printf '==> %s\n' "$*" >&2; }

need=()
# debugfs (e2fsprogs) builds images pulled from registries; the tests also
# use git, ssh, curl, ip (iproute2), openssl and python3 (release scripts).
for pair in qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils mkfs.ext4:e2fsprogs debugfs:e2fsprogs \
            debootstrap:debootstrap make:make git:git ssh:openssh-client curl:curl ip:iproute2 \
            openssl:openssl python3:python3; do
  cmd=${pair%%:*} pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || need+=("$pkg")
done
# A static busybox makes the tests' FROM-scratch image (TestScratchImage).
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${need[@]}" ca-certificates >/dev/null
fi
if ! command -v go >/dev/null 2>&1; then
  echo "quickstart: Go is required to build banger (https://go.dev/dl/, or /usr/local/go)" >&2
  exit 1
fi

say "building"
make -s build

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
