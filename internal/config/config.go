// Package config reads banger's config.toml and the environment variables
// that override it.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/BurntSushi/toml"

	"banger/internal/engine"
	"banger/internal/model"
	"banger/internal/paths"
)

// Config is the daemon's configuration. Zero values mean "default".
type Config struct {
	// Accel is "auto", "kvm" or "tcg"; env BANGER_ACCEL overrides it.
	Accel string `toml:"accel"`
	// QEMU is the qemu-system-x86_64 binary (name or path).
	QEMU string `toml:"qemu_bin"`
	// DefaultImage is used when vm create/run names no image.
	DefaultImage string `toml:"default_image"`
	VCPU         int    `toml:"vcpu"`
	MemoryMiB    int    `toml:"memory_mib"`
	DiskSize     string `toml:"disk_size"`
	// MaxImageSize caps what a pulled registry image may expand to (its
	// layers uncompressed, its entries together, each counting 4096
	// bytes plus a regular file's size): a tiny layer that claims
	// gigabytes of zeros, or holds millions of empty directories, is
	// refused instead of filling the disk.
	MaxImageSize string `toml:"max_image_size"`
	// BootTimeout bounds how long a start waits for the guest agent.
	BootTimeout Duration `toml:"boot_timeout"`
	// StopTimeout bounds a graceful stop before the VM is killed.
	StopTimeout Duration `toml:"stop_timeout"`

	// Network is the default network mode of new VMs: "auto" (bridge when
	// banger may manage the host network, i.e. as root; user otherwise),
	// "bridge", "user" or "none".
	Network     string `toml:"network"`
	BridgeName  string `toml:"bridge_name"`
	BridgeCIDR  string `toml:"bridge_cidr"`
	TapPoolSize int    `toml:"tap_pool_size"`
	// Balloon gives every VM a virtio balloon with free page reporting, so
	// an idle VM holds about what its guest uses (default true). Read at
	// each VM start; false is for comparisons (make bench).
	Balloon bool `toml:"balloon"`
	// GuestToGuest lets bridge-mode guests reach each other (default
	// true); false isolates them from each other, on the bridge and
	// through the host.
	GuestToGuest bool `toml:"guest_to_guest"`
	// DNSListen is the host loopback address where <name>.vm resolves.
	DNSListen string `toml:"dns_listen"`
	// APIListen, when set ("127.0.0.1:7070"), also serves the API on
	// this TCP address; every request there must carry the bearer token
	// of the file paths.Layout.APIToken (created at first use, 0600).
	// Off by default: the Unix socket needs no token.
	APIListen string `toml:"api_listen"`
	// DNSUpstreams are the resolvers queries outside banger's domain are
	// forwarded to (IP or IP:port); empty means the nameservers of
	// /etc/resolv.conf.
	DNSUpstreams []string `toml:"dns_upstreams"`
	// EgressExtraCA is a PEM file of CA certificates the egress proxy
	// trusts for upstream TLS in addition to the host's (private
	// networks, tests); empty: none.
	EgressExtraCA string `toml:"egress_extra_ca"`
	// HelperSocket is the socket of banger-helper, the privileged helper
	// a daemon not running as root uses for bridge mode; env
	// BANGER_HELPER_SOCKET overrides it.
	HelperSocket string `toml:"helper_socket"`
	// SSHKey is banger's private key (default under the config dir).
	SSHKey string `toml:"ssh_key"`
	// CatalogURL is the kernel and image catalog (a file path or an
	// http(s) URL); empty means the catalog built into banger. Env
	// BANGER_CATALOG overrides it.
	CatalogURL string `toml:"catalog_url"`
	// UpdateURL is the release manifest `banger update` reads (empty:
	// banger has no published release channel yet).
	UpdateURL string `toml:"update_url"`

	// Engine is the default VMM of new VMs: one of engine.Choices(),
	// "auto" (QEMU), "qemu" or "firecracker"; env BANGER_ENGINE overrides
	// it.
	Engine         string `toml:"engine"`
	FirecrackerBin string `toml:"firecracker_bin"`
	JailerBin      string `toml:"jailer_bin"`
	// JailerChrootBase is the jailer's --chroot-base-dir (default: under
	// the state dir, on the disks' filesystem so they can be hard-linked).
	JailerChrootBase string `toml:"jailer_chroot_base"`
	// JailerUID/JailerGID: 0 gives every jailed VM a dedicated uid/gid.
	JailerUID int `toml:"jailer_uid"`
	JailerGID int `toml:"jailer_gid"`

	// ExportMaxMiB caps a workspace export: the guest's patch is spooled
	// to disk and refused beyond this size.
	ExportMaxMiB int `toml:"export_max_mib"`
	// FileMaxMiB caps one file or archive sent to or read from a guest
	// through the files API and `vm cp`.
	FileMaxMiB int `toml:"file_max_mib"`
	// SerialLogMaxMiB caps the disk space of a VM's serial console log
	// (the current file plus one rotated copy).
	SerialLogMaxMiB int `toml:"serial_log_max_mib"`
}

// Duration is a time.Duration written as "30s" in TOML.
type Duration struct{ time.Duration }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// Default returns the built-in configuration.
func Default() Config {
	return Config{
		Accel:           "auto",
		QEMU:            "qemu-system-x86_64",
		VCPU:            2,
		MemoryMiB:       1024,
		DiskSize:        "8G",
		MaxImageSize:    "16G",
		BootTimeout:     Duration{3 * time.Minute},
		StopTimeout:     Duration{30 * time.Second},
		Network:         "auto",
		BridgeName:      "banger0",
		BridgeCIDR:      "172.16.0.1/24",
		TapPoolSize:     2,
		Balloon:         true,
		GuestToGuest:    true,
		DNSListen:       "127.0.0.1:42069",
		HelperSocket:    "/run/banger/helper.sock",
		Engine:          "auto",
		FirecrackerBin:  "firecracker",
		ExportMaxMiB:    256,
		FileMaxMiB:      4096,
		SerialLogMaxMiB: 8,
	}
}

// Load reads path (a missing file is not an error), applies environment
// overrides and fills defaults.
func Load(path string) (Config, error) { return load(path, os.Getenv) }

// LoadFile is Load without the environment's overrides: the config as the
// file (and the defaults) say, for a process that does not inherit the
// caller's environment, such as an installed service.
func LoadFile(path string) (Config, error) {
	return load(path, func(string) string { return "" })
}

func load(path string, getenv func(string) string) (Config, error) {
	// Decoding onto the defaults keeps every setting the file leaves out.
	c := Default()
	md, err := toml.DecodeFile(path, &c)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		c = Default()
	case err != nil:
		return Default(), fmt.Errorf("read config %s: %w", path, err)
	default:
		if und := md.Undecoded(); len(und) > 0 {
			return Default(), fmt.Errorf("config %s: unknown setting %q", path, und[0].String())
		}
	}
	if v := getenv("BANGER_ACCEL"); v != "" {
		c.Accel = v
	}
	if v := getenv("BANGER_ENGINE"); v != "" {
		c.Engine = v
	}
	if v := getenv("BANGER_NETWORK"); v != "" {
		c.Network = v
	}
	if v := getenv("BANGER_QEMU"); v != "" {
		c.QEMU = v
	}
	if v := getenv("BANGER_HELPER_SOCKET"); v != "" {
		c.HelperSocket = v
	}
	if v := getenv("BANGER_CATALOG"); v != "" {
		c.CatalogURL = v
	}
	return c, c.Validate()
}

// Validate checks the values.
func (c Config) Validate() error {
	switch c.Accel {
	case "auto", "kvm", "tcg":
	default:
		return fmt.Errorf("accel must be auto, kvm or tcg, got %q", c.Accel)
	}
	if err := model.CheckVCPU("vcpu", c.VCPU); err != nil {
		return err
	}
	if err := model.CheckMemoryMiB("memory_mib", c.MemoryMiB); err != nil {
		return err
	}
	if _, err := model.ParseDiskSize("disk_size", c.DiskSize); err != nil {
		return err
	}
	if n, err := ParseSize(c.MaxImageSize); err != nil || n <= 0 {
		return fmt.Errorf("max_image_size must be a size such as 16G, got %q", c.MaxImageSize)
	}
	if err := model.CheckNetworkMode("network", c.Network, true); err != nil {
		return err
	}
	if !validIfName(c.BridgeName) {
		return fmt.Errorf("bridge_name must be an interface name (1-15 of a-z A-Z 0-9 . _ -), got %q", c.BridgeName)
	}
	if p, err := netip.ParsePrefix(c.BridgeCIDR); err != nil || !p.Addr().Is4() || p.Bits() > 30 {
		return fmt.Errorf("bridge_cidr must be an IPv4 address/prefix of at most /30 such as 172.16.0.1/24, got %q", c.BridgeCIDR)
	}
	if err := engine.ValidChoice(c.Engine); err != nil {
		return fmt.Errorf("engine %w", err)
	}
	if c.TapPoolSize < 0 {
		return fmt.Errorf("tap_pool_size must not be negative")
	}
	for _, u := range c.DNSUpstreams {
		if _, err := netip.ParseAddrPort(u); err != nil {
			if _, err := netip.ParseAddr(u); err != nil {
				return fmt.Errorf("dns_upstreams: %q is not an IP address or IP:port", u)
			}
		}
	}
	if c.ExportMaxMiB < 1 {
		return fmt.Errorf("export_max_mib must be at least 1, got %d", c.ExportMaxMiB)
	}
	if c.FileMaxMiB < 1 {
		return fmt.Errorf("file_max_mib must be at least 1, got %d", c.FileMaxMiB)
	}
	if c.SerialLogMaxMiB < 1 {
		return fmt.Errorf("serial_log_max_mib must be at least 1, got %d", c.SerialLogMaxMiB)
	}
	if _, err := netip.ParseAddrPort(c.DNSListen); err != nil {
		return fmt.Errorf("dns_listen must be ADDR:PORT, got %q", c.DNSListen)
	}
	if c.APIListen != "" {
		if _, err := netip.ParseAddrPort(c.APIListen); err != nil {
			return fmt.Errorf("api_listen must be IP:PORT such as 127.0.0.1:7070, got %q", c.APIListen)
		}
	}
	if !filepath.IsAbs(c.HelperSocket) {
		return fmt.Errorf("helper_socket must be an absolute path, got %q", c.HelperSocket)
	}
	return nil
}

// ParseSize parses sizes like "512M", "8G", "1T" or a plain byte count
// (model.ParseSize).
func ParseSize(s string) (int64, error) { return model.ParseSize(s) }

// validIfName reports whether s is a usable network interface name.
func validIfName(s string) bool {
	if s == "" || len(s) > 15 || s == "." || s == ".." {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// SSHKeyPath is banger's ssh private key: ssh_key, else the default under
// the layout's config dir.
func (c Config) SSHKeyPath(l paths.Layout) string {
	if c.SSHKey != "" {
		return c.SSHKey
	}
	return l.SSHKey()
}
