package sysinstall

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"banger/internal/config"
)

// Metadata is /etc/banger/install.json: who owns the installation and where
// its pieces are. The CLI reads it to reach the daemon.
type Metadata struct {
	Owner        string    `json:"owner"`
	UID          int       `json:"uid"`
	GID          int       `json:"gid"`
	Group        string    `json:"group,omitempty"` // primary group name, for Group=
	Home         string    `json:"home"`
	BinDir       string    `json:"bin_dir"`
	RuntimeDir   string    `json:"runtime_dir"`   // the daemon's: BANGER_RUNTIME_DIR
	HelperSocket string    `json:"helper_socket"` // banger-helper's socket
	StateDir     string    `json:"state_dir"`     // the owner's banger state (XDG_STATE_HOME/banger)
	ConfigDir    string    `json:"config_dir"`    // the owner's banger config (XDG_CONFIG_HOME/banger)
	Version      string    `json:"version"`
	InstalledAt  time.Time `json:"installed_at"`
	// The helper's network, from the owner's config at install time
	// (bridge_name, bridge_cidr, tap_pool_size).
	Bridge  string `json:"bridge"`
	CIDR    string `json:"cidr"`
	TapPool int    `json:"tap_pool"`
	// IsolateGuests is guest_to_guest = false.
	IsolateGuests bool `json:"isolate_guests,omitempty"`
}

// DaemonSocket is the daemon's API socket.
func (m Metadata) DaemonSocket() string { return filepath.Join(m.RuntimeDir, "bangerd.sock") }

// owner is the account the metadata names.
func (m Metadata) owner() Account {
	return Account{Name: m.Owner, UID: m.UID, GID: m.GID, Group: m.Group, Home: m.Home}
}

// newMetadata describes an installation by owner a.
func newMetadata(o Options, a Account, cfg config.Config) Metadata {
	return Metadata{
		Owner: a.Name, UID: a.UID, GID: a.GID, Group: a.Group, Home: a.Home,
		BinDir: o.BinDir, RuntimeDir: DaemonRuntimeDir, HelperSocket: HelperSocket,
		StateDir: a.StateDir(), ConfigDir: a.ConfigDir(),
		Version: o.Version, InstalledAt: o.Now().UTC().Truncate(time.Second),
		Bridge: cfg.BridgeName, CIDR: cfg.BridgeCIDR, TapPool: cfg.TapPoolSize, IsolateGuests: !cfg.GuestToGuest,
	}
}

// validate checks what the units are rendered from.
func (m Metadata) validate() error {
	if !validName(m.Owner) {
		return fmt.Errorf("owner name %q cannot be used in a unit file's User=", m.Owner)
	}
	if m.Group != "" && !validName(m.Group) {
		return fmt.Errorf("group name %q cannot be used in a unit file's Group=", m.Group)
	}
	if m.UID <= 0 || m.GID < 0 {
		return fmt.Errorf("owner %q: uid %d / gid %d: want an unprivileged user", m.Owner, m.UID, m.GID)
	}
	for _, p := range []struct{ what, path string }{
		{"home", m.Home}, {"bin dir", m.BinDir}, {"runtime dir", m.RuntimeDir}, {"helper socket", m.HelperSocket},
	} {
		if err := checkUnitPath(p.what, p.path); err != nil {
			return err
		}
	}
	if m.RuntimeDir != DaemonRuntimeDir {
		return fmt.Errorf("runtime dir %s: the unit's RuntimeDirectory= makes it %s", m.RuntimeDir, DaemonRuntimeDir)
	}
	if filepath.Dir(m.HelperSocket) != HelperRuntimeDir {
		return fmt.Errorf("helper socket %s: it must be in the helper's RuntimeDirectory %s", m.HelperSocket, HelperRuntimeDir)
	}
	if strings.ContainsFunc(m.Version, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return fmt.Errorf("version %q contains control characters", m.Version)
	}
	// The helper's network settings go on its command line: checked like
	// the config checks them.
	c := config.Default()
	c.BridgeName, c.BridgeCIDR, c.TapPoolSize = m.Bridge, m.CIDR, m.TapPool
	if err := c.Validate(); err != nil {
		return fmt.Errorf("helper network: %w", err)
	}
	return nil
}

// ReadMetadata reads root's /etc/banger/install.json ("" is the real root).
// An error wrapping fs.ErrNotExist means banger is not installed as a
// system service.
func ReadMetadata(root string) (*Metadata, error) {
	if root == "" {
		root = "/"
	}
	b, err := os.ReadFile(under(root, MetadataPath))
	if err != nil {
		return nil, fmt.Errorf("read install metadata: %w", err)
	}
	var m Metadata
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("read install metadata %s: %w", MetadataPath, err)
	}
	if m.Owner == "" || m.Home == "" || m.BinDir == "" || m.RuntimeDir == "" {
		return nil, fmt.Errorf("read install metadata %s: owner, home, bin_dir or runtime_dir missing", MetadataPath)
	}
	return &m, nil
}

// encode renders the metadata file.
func (m Metadata) encode() ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode install metadata: %w", err)
	}
	return append(b, '\n'), nil
}

// RenderUnits renders banger-helper.service and bangerd.service for the
// installation meta describes, keyed by unit name. Options supply the
// lookups: bangerd gets SupplementaryGroups=kvm when a kvm group exists.
func RenderUnits(o Options, meta Metadata) (map[string][]byte, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := meta.validate(); err != nil {
		return nil, fmt.Errorf("render units: %w", err)
	}
	kvm, err := o.Users.HasGroup("kvm")
	if err != nil {
		return nil, fmt.Errorf("render units: look up group kvm: %w", err)
	}
	return map[string][]byte{
		HelperUnit: renderHelper(meta),
		DaemonUnit: renderDaemon(meta, kvm),
	}, nil
}

// header names who wrote a unit file.
func header(unit, version string) string {
	if version == "" {
		version = "unknown version"
	}
	return fmt.Sprintf("# %s, written by \"banger system install\" (banger %s).\n"+
		"# Re-run the install rather than editing it: the install rewrites this file.\n", unit, version)
}

func renderHelper(m Metadata) []byte {
	var b bytes.Buffer
	b.WriteString(header(HelperUnit, m.Version))
	fmt.Fprintf(&b, `[Unit]
Description=banger privileged network helper (bridge, taps, NAT) for %[1]s's bangerd
After=network.target

[Service]
# Type=notify: active only once the socket answers (sd_notify READY=1).
Type=notify
ExecStart=%[2]s --socket %[3]s --allow-uid %[4]d --bridge %[7]s --cidr %[8]s --tap-pool %[9]d%[10]s
Restart=on-failure
RestartSec=2s
TimeoutStopSec=30
# Stopping or restarting the helper never touches running VMs: only its
# main process is signalled, and nothing is ever sent SIGKILL.
KillMode=process
SendSIGKILL=no
# %[5]s holds the socket, in a directory only root may write; it is
# kept across restarts.
RuntimeDirectory=%[6]s
RuntimeDirectoryMode=0755
RuntimeDirectoryPreserve=yes
UMask=0077

# Root, but only for the network. CAP_NET_ADMIN: bridge, taps (TUNSETIFF,
# TUNSETOWNER, TUNSETPERSIST), nftables rules, sysctls under /proc/sys/net.
# CAP_NET_BIND_SERVICE: the DNS sockets on port 53 of the bridge address.
# CAP_CHOWN: handing the socket to uid %[4]d. Nothing else: no CAP_SYS_ADMIN.
CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_BIND_SERVICE CAP_CHOWN
AmbientCapabilities=
NoNewPrivileges=yes
# strict leaves /proc/sys writable (ProtectKernelTunables= is deliberately
# unset): the helper turns on net.ipv4.ip_forward.
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
DevicePolicy=closed
DeviceAllow=/dev/net/tun rw
RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM

[Install]
WantedBy=multi-user.target
`, m.Owner, filepath.Join(m.BinDir, "banger-helper"), m.HelperSocket, m.UID,
		filepath.Dir(m.HelperSocket), filepath.Base(filepath.Dir(m.HelperSocket)), m.Bridge, m.CIDR, m.TapPool, isolateFlag(m))
	return b.Bytes()
}

// isolateFlag is the helper's --isolate-guests when the owner's config
// says guest_to_guest = false.
func isolateFlag(m Metadata) string {
	if m.IsolateGuests {
		return " --isolate-guests"
	}
	return ""
}

func renderDaemon(m Metadata, kvm bool) []byte {
	a := m.owner()
	group := a.Group
	if group == "" {
		group = strconv.Itoa(a.GID)
	}
	var groups string
	if kvm {
		groups = "SupplementaryGroups=kvm\n"
	}
	var b bytes.Buffer
	b.WriteString(header(DaemonUnit, m.Version))
	fmt.Fprintf(&b, `[Unit]
Description=banger daemon (disposable microVMs) for %[1]s
# Wants=, not Requires=: stopping or restarting the helper leaves the daemon
# (and its VMs) running.
Wants=%[2]s
After=%[2]s network.target

[Service]
# Type=notify: active only once the socket answers (sd_notify READY=1).
Type=notify
User=%[1]s
Group=%[3]s
%[4]sEnvironment=HOME=%[5]s XDG_STATE_HOME=%[6]s XDG_CONFIG_HOME=%[7]s BANGER_RUNTIME_DIR=%[8]s
ExecStart=%[9]s
Restart=on-failure
RestartSec=2s
TimeoutStopSec=30
# The VMs (QEMU processes) bangerd starts stay in this service's cgroup and
# must outlive a stop or restart: only bangerd is signalled, nothing is ever
# sent SIGKILL, and the next bangerd re-adopts the VMs. A VM killed by the
# OOM killer does not stop the service either.
KillMode=process
SendSIGKILL=no
OOMPolicy=continue
# %[8]s holds the API socket and the VMs' sockets: kept across restarts.
RuntimeDirectory=%[10]s
RuntimeDirectoryMode=0700
RuntimeDirectoryPreserve=yes

# Everything read-only but banger's state and config directories; ~/.ssh
# stays read-only (the CLI, not the daemon, edits ~/.ssh/config). /dev is
# left alone: QEMU needs /dev/kvm and /dev/net/tun.
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths=%[11]s %[12]s
# No PrivateTmp: the daemon reads paths the user names (kernel import
# --from, image build --from-dir and --copy), which may well be in /tmp.
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
LockPersonality=yes

[Install]
WantedBy=multi-user.target
`, a.Name, HelperUnit, group, groups,
		a.Home, filepath.Join(a.Home, ".local", "state"), filepath.Join(a.Home, ".config"), m.RuntimeDir,
		filepath.Join(m.BinDir, "bangerd"), filepath.Base(m.RuntimeDir),
		a.StateDir(), a.ConfigDir())
	return b.Bytes()
}
