package config

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"banger/internal/paths"
	"banger/internal/testenv"
)

func TestParseSize(t *testing.T) {
	cases := map[string]int64{"1": 1, "512M": 512 << 20, "8G": 8 << 30, "8g": 8 << 30, "1GiB": 1 << 30, "2T": 2 << 40, "1.5G": 3 << 29, "64K": 64 << 10}
	for in, want := range cases {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "G", "-1G", "0", "abc", "1X"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
}

func TestLoad(t *testing.T) {
	testenv.Isolate(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	c, err := Load(path)
	if err != nil || c.Accel != "auto" || c.VCPU != 2 {
		t.Fatalf("defaults without a file: %+v %v", c, err)
	}
	os.WriteFile(path, []byte("accel = \"tcg\"\nvcpu = 4\nstop_timeout = \"7s\"\n"), 0o600)
	c, err = Load(path)
	if err != nil || c.Accel != "tcg" || c.VCPU != 4 || c.StopTimeout.Duration != 7*time.Second || c.MemoryMiB != 1024 {
		t.Fatalf("file values: %+v %v", c, err)
	}
	t.Setenv("BANGER_ACCEL", "kvm")
	if c, _ = Load(path); c.Accel != "kvm" {
		t.Errorf("BANGER_ACCEL did not override: %s", c.Accel)
	}
	t.Setenv("BANGER_ACCEL", "warp")
	if _, err := Load(path); err == nil {
		t.Errorf("bad accel accepted")
	}
	t.Setenv("BANGER_ACCEL", "")
	os.WriteFile(path, []byte("acel = \"tcg\"\n"), 0o600)
	if _, err := Load(path); err == nil {
		t.Errorf("unknown key accepted")
	}
}

// Every override applies to Load and to none of LoadFile, which gives the
// config an installed service (that does not inherit the caller's
// environment) will use.
func TestLoadEnvironmentOverrides(t *testing.T) {
	testenv.Isolate(t)
	path := filepath.Join(t.TempDir(), "config.toml")
	os.WriteFile(path, []byte("accel = \"tcg\"\nqemu_bin = \"/opt/qemu\"\n"), 0o600)
	env := map[string]string{
		"BANGER_ACCEL": "kvm", "BANGER_ENGINE": "qemu", "BANGER_NETWORK": "none", "BANGER_QEMU": "/env/qemu",
		"BANGER_HELPER_SOCKET": "/env/helper.sock", "BANGER_CATALOG": "https://catalog.example/env.json",
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{
		"BANGER_ACCEL": c.Accel, "BANGER_ENGINE": c.Engine, "BANGER_NETWORK": c.Network, "BANGER_QEMU": c.QEMU,
		"BANGER_HELPER_SOCKET": c.HelperSocket, "BANGER_CATALOG": c.CatalogURL,
	}
	for k, v := range env {
		if got[k] != v {
			t.Errorf("Load: %s=%s gave %q", k, v, got[k])
		}
	}
	t.Setenv("BANGER_ACCEL", "warp") // would be refused by Load
	f, err := LoadFile(path)
	d := Default()
	if err != nil || f.Accel != "tcg" || f.QEMU != "/opt/qemu" || f.Engine != d.Engine || f.Network != d.Network ||
		f.HelperSocket != d.HelperSocket || f.CatalogURL != d.CatalogURL {
		t.Errorf("LoadFile took the environment: %+v %v", f, err)
	}
}

func TestValidateNetworkSettings(t *testing.T) {
	for _, c := range []struct {
		bridge, cidr string
		pool         int
		ok           bool
	}{
		{"banger0", "172.16.0.1/24", 2, true},
		{"br-dev.1_x", "10.9.0.1/30", 0, true},
		{"", "172.16.0.1/24", 2, false},
		{"sixteen-chars-xx", "172.16.0.1/24", 2, false},
		{"a b", "172.16.0.1/24", 2, false},
		{"br/0", "172.16.0.1/24", 2, false},
		{"..", "172.16.0.1/24", 2, false},
		{"banger0", "172.16.0.1/31", 2, false},
		{"banger0", "fd00::1/64", 2, false},
		{"banger0", "172.16.0.1/24", -1, false},
	} {
		cfg := Default()
		cfg.BridgeName, cfg.BridgeCIDR, cfg.TapPoolSize = c.bridge, c.cidr, c.pool
		if err := cfg.Validate(); (err == nil) != c.ok {
			t.Errorf("%q %q %d: ok=%v, err %v", c.bridge, c.cidr, c.pool, c.ok, err)
		}
	}
}

func TestSSHKeyPath(t *testing.T) {
	l := paths.Layout{Config: "/c/banger"}
	c := Default()
	if got := c.SSHKeyPath(l); got != l.SSHKey() {
		t.Errorf("default key %s, want %s", got, l.SSHKey())
	}
	c.SSHKey = "/keys/id"
	if got := c.SSHKeyPath(l); got != "/keys/id" {
		t.Errorf("ssh_key: %s", got)
	}
}

// guest_to_guest defaults to true and can be turned off; dns_upstreams are
// IP or IP:port.
func TestGuestToGuestAndDNSUpstreams(t *testing.T) {
	for _, k := range []string{"BANGER_ACCEL", "BANGER_ENGINE", "BANGER_NETWORK", "BANGER_QEMU", "BANGER_HELPER_SOCKET", "BANGER_CATALOG"} {
		t.Setenv(k, "")
	}
	path := filepath.Join(t.TempDir(), "config.toml")
	c, err := Load(path)
	if err != nil || !c.GuestToGuest || c.DNSUpstreams != nil {
		t.Fatalf("defaults: %+v %v", c, err)
	}
	os.WriteFile(path, []byte("guest_to_guest = false\ndns_upstreams = [\"10.250.1.2:53\", \"192.0.2.1\"]\n"), 0o600)
	if c, err = Load(path); err != nil || c.GuestToGuest || len(c.DNSUpstreams) != 2 {
		t.Fatalf("file values: %+v %v", c, err)
	}
	os.WriteFile(path, []byte("dns_upstreams = [\"resolver.example\"]\n"), 0o600)
	if _, err := Load(path); err == nil {
		t.Error("a host name accepted as a dns upstream")
	}
}

func TestAPIListen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.toml")
	c, err := LoadFile(path)
	if err != nil || c.APIListen != "" {
		t.Fatalf("default: %q %v, want off", c.APIListen, err)
	}
	os.WriteFile(path, []byte("api_listen = \"127.0.0.1:7070\"\n"), 0o600)
	if c, err = LoadFile(path); err != nil || c.APIListen != "127.0.0.1:7070" {
		t.Fatalf("api_listen: %q %v", c.APIListen, err)
	}
	for _, bad := range []string{"7070", "localhost:7070", ":7070", "127.0.0.1", "127.0.0.1:x"} {
		os.WriteFile(path, []byte("api_listen = \""+bad+"\"\n"), 0o600)
		if _, err := LoadFile(path); err == nil {
			t.Errorf("api_listen %q accepted", bad)
		}
	}
}
