package policy

import (
	"net/netip"
	"strings"
	"testing"
)

func mustBuild(t *testing.T, s Spec) *Policy {
	t.Helper()
	p, err := Build(s)
	if err != nil {
		t.Fatalf("Build(%+v): %v", s, err)
	}
	return p
}

func TestParseRule(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // String() of the parsed rule, or "" when an error is wanted
		err  string // substring of the error
	}{
		{in: "api.example.com", want: "api.example.com"},
		{in: "API.Example.COM.", want: "api.example.com"},
		{in: "api.example.com:443", want: "api.example.com:443"},
		{in: "*.example.com", want: "*.example.com"},
		{in: "*.Example.com:8443", want: "*.example.com:8443"},
		{in: "bücher.example", want: "xn--bcher-kva.example"},
		{in: "localhost", want: "localhost"},
		{in: "10.0.0.0/8", want: "10.0.0.0/8"},
		{in: "10.0.0.0/8:5432", want: "10.0.0.0/8:5432"},
		{in: "10.0.0.0/8:53/udp", want: "10.0.0.0/8:53/udp"},
		{in: "192.0.2.7", want: "192.0.2.7"},
		{in: "192.0.2.7:22/tcp", want: "192.0.2.7:22/tcp"},
		{in: "2001:db8::7", want: "2001:db8::7"},
		{in: "[2001:db8::7]:443", want: "[2001:db8::7]:443"},
		{in: "[2001:db8::/32]:443", want: "[2001:db8::/32]:443"},
		{in: "2001:db8::/32", want: "2001:db8::/32"},
		{in: "::ffff:10.0.0.0/104", want: "10.0.0.0/8"},
		{in: "", err: "empty"},
		{in: "api.example.com:0", err: "1 to 65535"},
		{in: "api.example.com:65536", err: "1 to 65535"},
		{in: "api.example.com:+80", err: "1 to 65535"},
		{in: "api.example.com:080", err: "1 to 65535"},
		{in: "api.example.com:", err: "1 to 65535"},
		{in: "a.*.example.com", err: "leftmost"},
		{in: "*example.com", err: "leftmost"},
		{in: "*", err: "leftmost"},
		{in: "*.", err: "empty"},
		{in: "**.example.com", err: "leftmost"},
		{in: "api.example.com/udp", err: "only for address rules"},
		{in: "10.1.2.3/8", err: "did you mean 10.0.0.0/8"},
		{in: "10.0.0.0/33", err: "bad CIDR"},
		{in: "fe80::1%eth0", err: "zones"},
		{in: "[10.0.0.1]:80", err: "IPv6"},
		{in: "[2001:db8::1]x", err: "unexpected"},
		{in: "bad_name.example", err: "bad"},
		{in: "-bad.example", err: "bad"},
		{in: "a..b", err: "label"},
		{in: "../../etc/passwd", err: "bad CIDR"}, {in: "..", err: "label"},
		{in: strings.Repeat("a", 64) + ".example", err: ""},
		{in: "1.2.3", err: "numeric"},
		{in: "a b.example", err: "host name"},
	} {
		h, n, err := ParseRule(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("ParseRule(%q) = %v %v, want an error", tc.in, h, n)
			} else if !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseRule(%q) error %q, want it to contain %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseRule(%q): %v", tc.in, err)
			continue
		}
		got := ""
		if h != nil {
			got = h.String()
		} else {
			got = n.String()
		}
		if got != tc.want {
			t.Errorf("ParseRule(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestAllowsName(t *testing.T) {
	p := mustBuild(t, Spec{Allow: []string{"api.example.com:443", "*.cdn.example", "plain.example", "10.0.0.0/8:5432"}})
	if p.Mode != Allow {
		t.Fatalf("mode %q, want allow (implied by --allow)", p.Mode)
	}
	for _, tc := range []struct {
		name string
		port uint16
		want bool
	}{
		{"api.example.com", 443, true},
		{"API.example.com.", 443, true},
		{"api.example.com", 80, false},
		{"example.com", 443, false},
		{"x.api.example.com", 443, false},
		{"a.cdn.example", 443, true},
		{"a.b.cdn.example", 80, true},
		{"cdn.example", 443, false}, // the apex is not matched by a wildcard
		{"xcdn.example", 443, false},
		{"plain.example", 1, true},
		{"plain.example", 65535, true},
		{"evil.example", 443, false},
		{"10.1.2.3", 5432, true}, // an IP literal is checked as an address
		{"10.1.2.3", 443, false},
		{"", 443, false},
		{"bad name", 443, false},
	} {
		if got := p.AllowsName(tc.name, tc.port); got != tc.want {
			t.Errorf("AllowsName(%q, %d) = %v, want %v", tc.name, tc.port, got, tc.want)
		}
	}
	if !p.AllowsResolve("api.example.com") || !p.AllowsResolve("x.cdn.example") || p.AllowsResolve("evil.example") {
		t.Error("AllowsResolve disagrees with the rules")
	}
}

func TestAllowsIP(t *testing.T) {
	p := mustBuild(t, Spec{Allow: []string{"10.0.0.0/8:5432", "192.0.2.7/32:53/udp", "2001:db8::/32", "api.example.com"}})
	ip := netip.MustParseAddr
	for _, tc := range []struct {
		ip    string
		port  uint16
		proto Proto
		want  bool
	}{
		{"10.9.9.9", 5432, TCP, true},
		{"10.9.9.9", 5432, UDP, true},
		{"10.9.9.9", 5433, TCP, false},
		{"11.0.0.1", 5432, TCP, false},
		{"::ffff:10.9.9.9", 5432, TCP, true},
		{"192.0.2.7", 53, UDP, true},
		{"192.0.2.7", 53, TCP, false},
		{"2001:db8::1", 1, TCP, true},
		{"2001:db9::1", 1, TCP, false},
		{"10.9.9.9", 5432, "icmp", false},
	} {
		if got := p.AllowsIP(ip(tc.ip), tc.port, tc.proto); got != tc.want {
			t.Errorf("AllowsIP(%s, %d, %s) = %v, want %v", tc.ip, tc.port, tc.proto, got, tc.want)
		}
	}
	if p.AllowsIP(netip.Addr{}, 1, TCP) {
		t.Error("the zero address is allowed")
	}
}

func TestModes(t *testing.T) {
	none := mustBuild(t, Spec{})
	all := mustBuild(t, Spec{Egress: "all"})
	if none.Mode != None || none.AllowsName("example.com", 443) || none.AllowsIP(netip.MustParseAddr("1.1.1.1"), 53, UDP) || none.AllowsResolve("example.com") {
		t.Errorf("default policy lets something out: %+v", none)
	}
	if !all.AllowsName("anything.example", 1) || !all.AllowsIP(netip.MustParseAddr("1.1.1.1"), 53, UDP) || !all.AllowsResolve("x.example") {
		t.Error("egress all refuses something")
	}
	var zero Policy
	if zero.AllowsName("example.com", 443) {
		t.Error("the zero Policy allows a name")
	}
	for _, s := range []Spec{
		{Egress: "none", Allow: []string{"example.com"}},
		{Egress: "some"},
		{Egress: "none", Secrets: []SecretSpec{{Name: "K", Hosts: []string{"a.example"}}}},
	} {
		if _, err := Build(s); err == nil {
			t.Errorf("Build(%+v) succeeded", s)
		}
	}
	if p := mustBuild(t, Spec{Egress: "ALLOW"}); p.Mode != Allow || p.AllowsName("example.com", 443) {
		t.Errorf("egress allow without rules: %+v", p)
	}
}

func TestSecrets(t *testing.T) {
	p := mustBuild(t, Spec{Secrets: []SecretSpec{
		{Name: "OPENAI_KEY", Hosts: []string{"api.openai.com:443"}, Env: "OPENAI_API_KEY"},
		{Name: "gh.token", Hosts: []string{"*.github.com"}, Env: "GH_TOKEN", Body: true},
	}})
	if p.Mode != Allow {
		t.Fatalf("secrets did not imply allow: %q", p.Mode)
	}
	if !p.AllowsName("api.openai.com", 443) || !p.AllowsName("api.github.com", 443) || p.AllowsName("github.com", 443) {
		t.Error("a secret's hosts are not implicitly allowed")
	}
	s, ok := p.SecretFor("gh.token")
	if !ok || !s.Body || s.Env != "GH_TOKEN" || !s.AllowsHost("API.github.com", 1) || s.AllowsHost("github.com", 1) {
		t.Errorf("SecretFor(gh.token) = %+v %v", s, ok)
	}
	for _, tc := range []struct {
		spec SecretSpec
		err  string
	}{
		{SecretSpec{Name: "../x", Hosts: []string{"a.example"}}, "secret name"},
		{SecretSpec{Name: ".hidden", Hosts: []string{"a.example"}}, "secret name"},
		{SecretSpec{Name: "", Hosts: []string{"a.example"}}, "secret name"},
		{SecretSpec{Name: "K"}, "no hosts"},
		{SecretSpec{Name: "gh.token", Hosts: []string{"a.example"}}, "valid environment variable"},
		{SecretSpec{Name: "K", Env: "1X", Hosts: []string{"a.example"}}, "valid environment variable"},
		{SecretSpec{Name: "K", Hosts: []string{"10.0.0.0/8"}}, "not addresses"},
		{SecretSpec{Name: "K", Hosts: []string{"a.*.example"}}, "leftmost"},
	} {
		_, err := Build(Spec{Secrets: []SecretSpec{tc.spec}})
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("Build(secret %+v) error %v, want %q", tc.spec, err, tc.err)
		}
	}
	dup := []SecretSpec{{Name: "A", Hosts: []string{"a.example"}}, {Name: "A", Hosts: []string{"b.example"}}}
	if _, err := Build(Spec{Secrets: dup}); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("duplicate secret: %v", err)
	}
	env := []SecretSpec{{Name: "A", Env: "X", Hosts: []string{"a.example"}}, {Name: "B", Env: "X", Hosts: []string{"b.example"}}}
	if _, err := Build(Spec{Secrets: env}); err == nil || !strings.Contains(err.Error(), "both use") {
		t.Errorf("duplicate env: %v", err)
	}
}

const exampleFile = `
egress = "allow"
allow = [
  "registry.npmjs.org:443",
  "*.githubusercontent.com",
  "10.20.0.0/16:5432",
]

[[secret]]
name = "OPENAI_KEY"
hosts = ["api.openai.com"]
env = "OPENAI_API_KEY"
body = false
`

func TestParseTOML(t *testing.T) {
	spec, err := ParseTOML(strings.NewReader(exampleFile))
	if err != nil {
		t.Fatal(err)
	}
	p := mustBuild(t, spec)
	if !p.AllowsName("registry.npmjs.org", 443) || !p.AllowsName("raw.githubusercontent.com", 443) ||
		!p.AllowsIP(netip.MustParseAddr("10.20.1.1"), 5432, TCP) || !p.AllowsName("api.openai.com", 443) {
		t.Errorf("example policy: %+v", p)
	}
	if s, ok := p.SecretFor("OPENAI_KEY"); !ok || s.Env != "OPENAI_API_KEY" {
		t.Errorf("secret: %+v", s)
	}
	merged := mustBuild(t, spec.Merge(Spec{Egress: "all", Allow: []string{"extra.example"}}))
	if merged.Mode != All || len(merged.Hosts) != 3 {
		t.Errorf("merge: %+v", merged)
	}

	for _, tc := range []struct{ in, err string }{
		{`egres = "all"`, "unknown key(s) egres"},
		{"[[secret]]\nname = \"A\"\nhost = [\"a.example\"]", "unknown key(s) secret.host"},
		{`allow = "a.example"`, "parse policy file"},
		{`egress = `, "parse policy file"},
		{"allow = [\"" + strings.Repeat("a", MaxFileSize) + "\"]", "larger than"},
	} {
		if _, err := ParseTOML(strings.NewReader(tc.in)); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("ParseTOML(%.40q) error %v, want %q", tc.in, err, tc.err)
		}
	}
	many := Spec{Allow: make([]string, MaxRules+1)}
	for i := range many.Allow {
		many.Allow[i] = "a.example"
	}
	if _, err := Build(many); err == nil {
		t.Error("too many rules accepted")
	}
}

func TestNormalizeName(t *testing.T) {
	for in, want := range map[string]string{
		"Example.COM.":          "example.com",
		"ÉXAMPLE.example":       "xn--xample-9ua.example",
		"xn--bcher-kva.example": "xn--bcher-kva.example",
	} {
		if got, err := NormalizeName(in); err != nil || got != want {
			t.Errorf("NormalizeName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", ".", "1.2.3.4", "::1", "a_b.example", "ex ample.com", strings.Repeat("a.", 130) + "com", "a\x00.example", "*.example.com"} {
		if got, err := NormalizeName(in); err == nil {
			t.Errorf("NormalizeName(%q) = %q, want an error", in, got)
		}
	}
}

// FuzzParseRule: parsing never panics, and what parses prints back to a
// rule that parses to the same thing.
func FuzzParseRule(f *testing.F) {
	for _, s := range []string{"api.example.com:443", "*.example.com", "10.0.0.0/8:53/udp", "[2001:db8::/32]:443", "bücher.example", "::ffff:1.2.3.4", "a.*.b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, n, err := ParseRule(s)
		if err != nil {
			return
		}
		if (h == nil) == (n == nil) {
			t.Fatalf("ParseRule(%q) = %v, %v", s, h, n)
		}
		var str string
		if h != nil {
			str = h.String()
		} else {
			str = n.String()
		}
		h2, n2, err := ParseRule(str)
		if err != nil {
			t.Fatalf("ParseRule(%q) ok as %q, which fails: %v", s, str, err)
		}
		if h != nil && (h2 == nil || *h2 != *h) || n != nil && (n2 == nil || *n2 != *n) {
			t.Fatalf("ParseRule(%q) round trip via %q differs", s, str)
		}
		if h != nil && !h.Wildcard && !h.Match(h.Domain, h.Port) {
			t.Fatalf("pattern %v does not match its own domain", h)
		}
	})
}

// FuzzParseTOML: a hostile policy file never panics the parser or Build.
func FuzzParseTOML(f *testing.F) {
	f.Add(exampleFile)
	f.Add("[[secret]]\nname=\"x\"\nhosts=[\"*.a.b\"]")
	f.Fuzz(func(t *testing.T, s string) {
		spec, err := ParseTOML(strings.NewReader(s))
		if err != nil {
			return
		}
		p, err := Build(spec)
		if err != nil {
			return
		}
		p.AllowsName("a.example", 443)
	})
}
