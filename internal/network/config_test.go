package network

import (
	"net/netip"
	"strings"
	"testing"
)

func TestConfigDefaults(t *testing.T) {
	got := Config{TapOwner: 1000}.WithDefaults()
	want := Config{Bridge: "banger0", CIDR: netip.MustParsePrefix("172.16.0.1/24"), TapPrefix: "bgtap",
		TapPoolSize: 2, TapOwner: 1000, Table: "banger", MaxTaps: DefaultMaxTaps}
	if got != want {
		t.Fatalf("WithDefaults = %+v, want %+v", got, want)
	}
	if err := got.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if n := (Config{TapPoolSize: -1}).WithDefaults().TapPoolSize; n != 0 {
		t.Errorf("negative pool size became %d, want 0 (no pool)", n)
	}
}

func TestConfigValidate(t *testing.T) {
	for name, tc := range map[string]struct {
		mut  func(*Config)
		want string
	}{
		"long bridge":        {func(c *Config) { c.Bridge = "a-very-long-bridge" }, "longer than 15"},
		"bad bridge":         {func(c *Config) { c.Bridge = "br/0" }, "refuses"},
		"long tap prefix":    {func(c *Config) { c.TapPrefix = "abcdefghijklm" }, "room for 3 digits"},
		"bridge with prefix": {func(c *Config) { c.Bridge = "bgtap-br" }, "starts with the tap prefix"},
		"ipv6 cidr":          {func(c *Config) { c.CIDR = netip.MustParsePrefix("fd00::1/64") }, "not IPv4"},
		"slash 31":           {func(c *Config) { c.CIDR = netip.MustParsePrefix("10.0.0.1/31") }, "no guest address"},
		"network address":    {func(c *Config) { c.CIDR = netip.MustParsePrefix("10.0.0.0/24") }, "host address"},
		"owner":              {func(c *Config) { c.TapOwner = -2 }, "not a uid"},
		"table":              {func(c *Config) { c.Table = "has space" }, "table name"},
	} {
		cfg := Config{}.WithDefaults()
		tc.mut(&cfg)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate() = %v, want an error containing %q", name, err, tc.want)
		}
	}
	ok := Config{TapPrefix: "abcdefghijkl", TapOwner: -1}.WithDefaults()
	if err := ok.Validate(); err != nil {
		t.Errorf("12-character prefix: %v", err)
	}
}

func TestTapIndex(t *testing.T) {
	for name, want := range map[string]int{"bgtap0": 0, "bgtap7": 7, "bgtap123": 123} {
		if got, ok := tapIndex("bgtap", name); !ok || got != want {
			t.Errorf("tapIndex(%q) = %d, %v; want %d", name, got, ok, want)
		}
		if tapName("bgtap", want) != name {
			t.Errorf("tapName(%d) = %q, want %q", want, tapName("bgtap", want), name)
		}
	}
	for _, name := range []string{"bgtap", "bgtap01", "bgtapx", "bgtap1a", "xbgtap1", "banger0", "bgtap99999999"} {
		if i, ok := tapIndex("bgtap", name); ok {
			t.Errorf("tapIndex(%q) = %d, want no match", name, i)
		}
	}
}
