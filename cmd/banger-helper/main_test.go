package main

import (
	"io"
	"net/netip"
	"strings"
	"testing"

	"banger/internal/network"
	"banger/internal/privhelper"
)

func TestParseFlags(t *testing.T) {
	o, done, err := parseFlags([]string{"--allow-uid", "1000"}, io.Discard)
	if err != nil || done {
		t.Fatal(done, err)
	}
	if o.socket != privhelper.DefaultSocket || o.allowUID != 1000 {
		t.Fatalf("socket %q uid %d", o.socket, o.allowUID)
	}
	cfg := o.net.WithDefaults()
	if cfg.TapOwner != 1000 || cfg.TapPoolSize != network.DefaultTapPoolSize || cfg.CIDR != netip.MustParsePrefix(network.DefaultCIDR) || cfg.Bridge != network.DefaultBridge {
		t.Fatalf("defaults: %+v", cfg)
	}

	o, _, err = parseFlags([]string{"--allow-uid=0", "--tap-owner=-1", "--tap-pool=0", "--bridge=br9", "--cidr=10.1.2.1/28", "--socket=/x/h.sock"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	// Defaults are applied once by NewHost/NewServer: "no pool" must
	// survive that.
	if cfg := o.net.WithDefaults(); cfg.TapOwner != -1 || cfg.TapPoolSize != 0 || cfg.Bridge != "br9" || cfg.CIDR.String() != "10.1.2.1/28" || o.socket != "/x/h.sock" {
		t.Fatalf("explicit flags: %+v %q", cfg, o.socket)
	}

	for args, want := range map[string]string{
		"":                               "is required",
		"--allow-uid 1 --allow-user x":   "not both",
		"--allow-uid -3":                 "not a uid",
		"--allow-uid 1 --tap-owner -2":   "want a uid or -1",
		"--allow-uid 1 --tap-pool -1":    "want 0 or more",
		"--allow-uid 1 --cidr 10.0.0.1":  "--cidr",
		"--allow-uid 1 --cidr ::1/64":    "not IPv4",
		"--allow-uid 1 --bridge bgtap0":  "tap prefix",
		"--allow-user no-such-user-here": "--allow-user",
		"--allow-uid 1 extra":            "unexpected arguments",
	} {
		_, _, err := parseFlags(strings.Fields(args), io.Discard)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parseFlags(%q) = %v, want an error containing %q", args, err, want)
		}
	}
}
