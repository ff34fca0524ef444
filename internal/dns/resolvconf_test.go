package dns

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestParseResolvConfHostile feeds resolv.conf files no resolver writes:
// whatever they hold, the result is at most maxResolvServers distinct IP
// addresses on port 53, read without a panic.
func TestParseResolvConfHostile(t *testing.T) {
	ap := func(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
	var many strings.Builder
	for i := range 100000 {
		fmt.Fprintf(&many, "nameserver 10.%d.%d.%d\n", i>>16, (i>>8)&0xff, i&0xff)
	}
	huge := strings.Repeat("a", 1<<20)
	cases := map[string]struct {
		in   string
		want []netip.AddrPort
	}{
		"many servers": {many.String(), []netip.AddrPort{ap("10.0.0.0:53"), ap("10.0.0.1:53"), ap("10.0.0.2:53")}},
		"duplicates before a distinct one": {
			strings.Repeat("nameserver 10.0.0.1\n", 1000) + "nameserver 10.0.0.2\n",
			[]netip.AddrPort{ap("10.0.0.1:53"), ap("10.0.0.2:53")},
		},
		"huge line after the servers": {
			"nameserver 10.0.0.1\n" + huge + "\nnameserver 10.0.0.2\n",
			[]netip.AddrPort{ap("10.0.0.1:53")}, // the reader stops at a line over 64 KiB
		},
		"huge nameserver entry": {"nameserver " + huge + "\n", nil},
		"garbage": {
			"\x00\xff\xfe nameserver 10.0.0.5\nnameserver\nnameserver 999.1.1.1\nnameserver 10.0.0.1#office\n" +
				"nameserver ::ffff:10.0.0.9\r\nNAMESERVER 10.0.0.7\nnameserver\t10.0.0.1;again\n",
			[]netip.AddrPort{ap("10.0.0.1:53"), ap("10.0.0.9:53")},
		},
		"empty": {"", nil},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if got := ParseResolvConf([]byte(c.in)); !slices.Equal(got, c.want) {
				t.Errorf("got %v, want %v", got, c.want)
			}
		})
	}

	rng := rand.New(rand.NewPCG(5, 6))
	words := []string{"nameserver", "search", "options", "domain", "#", ";", "10.0.0.1", "::1", "\n", "\n", " ", "\t", "\x00", "ndots:99"}
	for range 2000 {
		var b strings.Builder
		for range rng.IntN(60) {
			if rng.IntN(4) == 0 {
				b.WriteByte(byte(rng.Uint32()))
			} else {
				b.WriteString(words[rng.IntN(len(words))])
			}
		}
		got := ParseResolvConf([]byte(b.String()))
		if len(got) > maxResolvServers {
			t.Fatalf("%q: %d servers", b.String(), len(got))
		}
		for _, s := range got {
			if s.Port() != 53 || !s.Addr().IsValid() || s.Addr().Is4In6() {
				t.Fatalf("%q: bad server %v", b.String(), s)
			}
		}
	}
}

// TestReadResolvConfBounded: a resolv.conf far larger than any real one is
// read only up to maxResolvConfSize.
func TestReadResolvConfBounded(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	big := "nameserver 10.0.0.3\n" + strings.Repeat("# padding\n", 1<<20)
	if err := os.WriteFile(p, []byte(big), 0o644); err != nil {
		t.Fatal(err)
	}
	data, err := readResolvConf(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) != maxResolvConfSize {
		t.Fatalf("read %d bytes, want %d", len(data), maxResolvConfSize)
	}
	if got := ParseResolvConf(data); !slices.Equal(got, []netip.AddrPort{netip.MustParseAddrPort("10.0.0.3:53")}) {
		t.Errorf("got %v", got)
	}
	if _, err := readResolvConf(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("missing file: no error")
	}
}
