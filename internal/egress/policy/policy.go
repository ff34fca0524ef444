// Package policy is the egress policy of a VM: which hosts, networks and
// ports a guest may reach, and which secrets it may use towards which
// hosts. It parses the `vm create|run` flags (--egress, --allow) and the
// policy file (--policy FILE, TOML) into one validated Policy and answers
// the two questions the enforcement layers ask: AllowsName (the DNS server
// and the proxy, by host name) and AllowsIP (the firewall, by address).
//
// # Rules
//
// An --allow value is one of
//
//	HOST[:PORT]          api.example.com, api.example.com:443
//	*.DOMAIN[:PORT]      *.example.com: every name below example.com,
//	                     NOT example.com itself (add it separately)
//	IP[:PORT]            192.0.2.7, 192.0.2.7:5432, [2001:db8::7]:443
//	CIDR[:PORT]          10.0.0.0/8, 10.0.0.0/8:5432, [2001:db8::/32]:443
//
// optionally followed by /tcp or /udp (CIDR and IP rules only; a rule
// without it covers both). A missing port means every port. Host names
// are normalised: IDNA (ünïcode.example → xn--...), lower case, no
// trailing dot. A wildcard is only allowed as the whole leftmost label.
// A CIDR must be given by its network address (10.0.0.0/8, not 10.1.2.3/8).
//
// Name rules are enforced by name (DNS answers and the proxy's SNI/Host
// check); address rules by address (the firewall). A name rule never opens
// the addresses a name resolves to for other names, and an address rule
// never makes a name resolve.
//
// # Modes
//
// --egress none (the default: nothing leaves the VM), all (everything, the
// former --nat) or allow (only what the rules allow). Any --allow or secret
// implies allow when no mode is given; none together with rules or secrets
// is an error.
//
// # Policy file
//
// A TOML file of at most 64 KiB; unknown keys are refused:
//
//	egress = "allow"                       # optional, as --egress
//	allow = [                              # as repeated --allow
//	  "registry.npmjs.org:443",
//	  "*.githubusercontent.com",
//	  "10.20.0.0/16:5432",
//	]
//
//	[[secret]]
//	name = "OPENAI_KEY"                    # the name in `banger secret set`
//	hosts = ["api.openai.com"]             # HOST[:PORT] or *.DOMAIN[:PORT]
//	env = "OPENAI_API_KEY"                 # guest variable; default: name
//	body = false                           # also substitute in request bodies
//
// A secret's hosts are allowed implicitly (they need not be repeated in
// allow).
package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/BurntSushi/toml"
	"golang.org/x/net/idna"
)

// Mode is the overall egress mode of a VM.
type Mode string

const (
	// None lets nothing leave the VM (no DNS forwarding either).
	None Mode = "none"
	// All lets everything leave the VM (NAT, no filtering).
	All Mode = "all"
	// Allow lets out only what the rules allow.
	Allow Mode = "allow"
)

// MaxFileSize caps a policy file.
const MaxFileSize = 64 << 10

// Limits on the number of entries, so a shared policy file cannot make
// the daemon or the firewall do unbounded work.
const (
	MaxRules   = 1024
	MaxSecrets = 64
	MaxHosts   = 256 // per secret
)

// Proto is a transport protocol.
type Proto string

const (
	TCP Proto = "tcp"
	UDP Proto = "udp"
)

// HostPattern is a normalised host name, or a wildcard standing for every
// name strictly below Domain.
type HostPattern struct {
	Domain   string // normalised, e.g. "example.com"
	Wildcard bool   // "*.example.com": subdomains only, not the apex
	Port     uint16 // 0: any port
}

// String is the pattern as written in a rule.
func (h HostPattern) String() string {
	s := h.Domain
	if h.Wildcard {
		s = "*." + s
	}
	if h.Port != 0 {
		s += ":" + strconv.Itoa(int(h.Port))
	}
	return s
}

// Match reports whether the normalised name (see NormalizeName) and port
// fall under the pattern.
func (h HostPattern) Match(name string, port uint16) bool {
	if h.Port != 0 && h.Port != port {
		return false
	}
	if h.Wildcard {
		return len(name) > len(h.Domain)+1 && strings.HasSuffix(name, h.Domain) &&
			name[len(name)-len(h.Domain)-1] == '.'
	}
	return name == h.Domain
}

// NetRule allows a network (or one address), optionally one port and one
// protocol.
type NetRule struct {
	Prefix netip.Prefix
	Port   uint16 // 0: any port
	Proto  Proto  // "": tcp and udp
}

// String is the rule as written.
func (r NetRule) String() string {
	s := r.Prefix.String()
	if r.Prefix.IsSingleIP() {
		s = r.Prefix.Addr().String()
	}
	if r.Port != 0 {
		if r.Prefix.Addr().Is6() {
			s = "[" + s + "]"
		}
		s += ":" + strconv.Itoa(int(r.Port))
	}
	if r.Proto != "" {
		s += "/" + string(r.Proto)
	}
	return s
}

// Match reports whether the rule covers ip, port and proto.
func (r NetRule) Match(ip netip.Addr, port uint16, proto Proto) bool {
	if r.Port != 0 && r.Port != port {
		return false
	}
	if r.Proto != "" && r.Proto != proto {
		return false
	}
	return r.Prefix.Contains(ip.Unmap())
}

// Secret says which hosts may receive a secret and under which guest
// environment variable its placeholder appears.
type Secret struct {
	Name  string        // the secret's name in the store
	Hosts []HostPattern // where the real value may go
	Env   string        // guest environment variable (default Name)
	Body  bool          // substitute in request bodies too (headers always)
}

// AllowsHost reports whether the secret may be sent to name:port.
func (s Secret) AllowsHost(name string, port uint16) bool {
	n, err := NormalizeName(name)
	if err != nil {
		return false
	}
	for _, h := range s.Hosts {
		if h.Match(n, port) {
			return true
		}
	}
	return false
}

// Policy is a VM's validated egress policy. The zero value is mode None.
type Policy struct {
	Mode    Mode
	Hosts   []HostPattern
	Nets    []NetRule
	Secrets []Secret
}

// AllowsName reports whether the guest may reach name (a host name, or an
// IP literal, which is then checked as AllowsIP over TCP) on port. A name
// that does not normalise is refused.
func (p *Policy) AllowsName(name string, port uint16) bool {
	switch p.Mode {
	case All:
		return true
	case Allow:
	default:
		return false
	}
	if ip, err := netip.ParseAddr(strings.Trim(name, "[]")); err == nil {
		return p.AllowsIP(ip, port, TCP)
	}
	n, err := NormalizeName(name)
	if err != nil {
		return false
	}
	for _, h := range p.Hosts {
		if h.Match(n, port) {
			return true
		}
	}
	for _, s := range p.Secrets {
		for _, h := range s.Hosts {
			if h.Match(n, port) {
				return true
			}
		}
	}
	return false
}

// AllowsResolve reports whether the DNS server should answer for name:
// whether some port of it is allowed.
func (p *Policy) AllowsResolve(name string) bool {
	return p.Mode == All || p.anyPort(name)
}

func (p *Policy) anyPort(name string) bool {
	if p.Mode != Allow {
		return false
	}
	n, err := NormalizeName(name)
	if err != nil {
		return false
	}
	match := func(h HostPattern) bool { h.Port = 0; return h.Match(n, 0) }
	for _, h := range p.Hosts {
		if match(h) {
			return true
		}
	}
	for _, s := range p.Secrets {
		for _, h := range s.Hosts {
			if match(h) {
				return true
			}
		}
	}
	return false
}

// AllowsIP reports whether the guest may reach ip on port over proto
// ("tcp" or "udp") by address.
func (p *Policy) AllowsIP(ip netip.Addr, port uint16, proto Proto) bool {
	if proto != TCP && proto != UDP || !ip.IsValid() {
		return false
	}
	switch p.Mode {
	case All:
		return true
	case Allow:
	default:
		return false
	}
	for _, r := range p.Nets {
		if r.Match(ip, port, proto) {
			return true
		}
	}
	return false
}

// SecretFor returns the policy's entry for the secret name.
func (p *Policy) SecretFor(name string) (Secret, bool) {
	for _, s := range p.Secrets {
		if s.Name == name {
			return s, true
		}
	}
	return Secret{}, false
}

// Spec is the unvalidated input from flags (and a file), as the CLI and
// the API carry it.
type Spec struct {
	Egress  string       `toml:"egress" json:"egress,omitempty"`
	Allow   []string     `toml:"allow" json:"allow,omitempty"`
	Secrets []SecretSpec `toml:"secret" json:"secrets,omitempty"`
}

// SecretSpec is one secret entry of a Spec.
type SecretSpec struct {
	Name  string   `toml:"name" json:"name"`
	Hosts []string `toml:"hosts" json:"hosts,omitempty"`
	Env   string   `toml:"env" json:"env,omitempty"`
	Body  bool     `toml:"body" json:"body,omitempty"`
}

// Merge returns s with o's rules and secrets appended and o's mode taking
// over when set (flags given after a file override it).
func (s Spec) Merge(o Spec) Spec {
	out := Spec{Egress: s.Egress}
	if o.Egress != "" {
		out.Egress = o.Egress
	}
	out.Allow = append(append([]string(nil), s.Allow...), o.Allow...)
	out.Secrets = append(append([]SecretSpec(nil), s.Secrets...), o.Secrets...)
	return out
}

// ParseFile reads a TOML policy file (see the package documentation).
func ParseFile(path string) (Spec, error) {
	f, err := os.Open(path)
	if err != nil {
		return Spec{}, fmt.Errorf("read policy file: %w", err)
	}
	defer f.Close()
	return ParseTOML(f)
}

// ParseTOML reads a policy file's content from r (at most MaxFileSize
// bytes), refusing unknown keys.
func ParseTOML(r io.Reader) (Spec, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxFileSize+1))
	if err != nil {
		return Spec{}, fmt.Errorf("read policy file: %w", err)
	}
	if len(data) > MaxFileSize {
		return Spec{}, fmt.Errorf("policy file is larger than %d bytes", MaxFileSize)
	}
	var spec Spec
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&spec)
	if err != nil {
		return Spec{}, fmt.Errorf("parse policy file: %w", err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return Spec{}, fmt.Errorf("parse policy file: unknown key(s) %s", strings.Join(keys, ", "))
	}
	return spec, nil
}

// Build validates a Spec into a Policy.
func Build(s Spec) (*Policy, error) {
	p := &Policy{}
	if len(s.Allow) > MaxRules {
		return nil, fmt.Errorf("too many allow rules (%d, at most %d)", len(s.Allow), MaxRules)
	}
	if len(s.Secrets) > MaxSecrets {
		return nil, fmt.Errorf("too many secrets (%d, at most %d)", len(s.Secrets), MaxSecrets)
	}
	for _, a := range s.Allow {
		h, n, err := ParseRule(a)
		if err != nil {
			return nil, err
		}
		if h != nil {
			p.Hosts = append(p.Hosts, *h)
		} else {
			p.Nets = append(p.Nets, *n)
		}
	}
	seen := map[string]bool{}
	envs := map[string]string{}
	for _, ss := range s.Secrets {
		sec, err := buildSecret(ss)
		if err != nil {
			return nil, err
		}
		if seen[sec.Name] {
			return nil, fmt.Errorf("secret %q is listed twice", sec.Name)
		}
		seen[sec.Name] = true
		if other, ok := envs[sec.Env]; ok {
			return nil, fmt.Errorf("secrets %q and %q both use the guest variable %s", other, sec.Name, sec.Env)
		}
		envs[sec.Env] = sec.Name
		p.Secrets = append(p.Secrets, sec)
	}
	hasRules := len(p.Hosts)+len(p.Nets)+len(p.Secrets) > 0
	switch Mode(strings.ToLower(strings.TrimSpace(s.Egress))) {
	case "":
		p.Mode = None
		if hasRules {
			p.Mode = Allow
		}
	case None:
		if hasRules {
			return nil, errors.New("egress none cannot be combined with allow rules or secrets")
		}
		p.Mode = None
	case All:
		p.Mode = All
	case Allow:
		p.Mode = Allow
	default:
		return nil, fmt.Errorf("egress mode %q: want all, none or allow", s.Egress)
	}
	return p, nil
}

var (
	secretNameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$`)
	envNameRE    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)
)

// ValidSecretName reports whether name may name a secret: 1-64 of
// A-Z a-z 0-9 _ . -, not starting with . or - (so never a path trick).
func ValidSecretName(name string) bool { return secretNameRE.MatchString(name) }

func buildSecret(ss SecretSpec) (Secret, error) {
	if !ValidSecretName(ss.Name) {
		return Secret{}, fmt.Errorf("secret name %q: want 1-64 letters, digits, _ . - (not starting with . or -)", ss.Name)
	}
	sec := Secret{Name: ss.Name, Env: ss.Env, Body: ss.Body}
	if sec.Env == "" {
		sec.Env = ss.Name
	}
	if !envNameRE.MatchString(sec.Env) {
		return Secret{}, fmt.Errorf("secret %q: guest variable %q is not a valid environment variable name (set env)", ss.Name, sec.Env)
	}
	if len(ss.Hosts) == 0 {
		return Secret{}, fmt.Errorf("secret %q: no hosts (a secret needs the hosts it may be sent to)", ss.Name)
	}
	if len(ss.Hosts) > MaxHosts {
		return Secret{}, fmt.Errorf("secret %q: too many hosts (%d, at most %d)", ss.Name, len(ss.Hosts), MaxHosts)
	}
	for _, h := range ss.Hosts {
		hp, np, err := ParseRule(h)
		if err != nil {
			return Secret{}, fmt.Errorf("secret %q: %w", ss.Name, err)
		}
		if np != nil {
			return Secret{}, fmt.Errorf("secret %q: host %q: secrets go to host names, not addresses", ss.Name, h)
		}
		sec.Hosts = append(sec.Hosts, *hp)
	}
	return sec, nil
}

// ParseRule parses one --allow value into either a host pattern or a
// network rule (exactly one is non-nil).
func ParseRule(s string) (*HostPattern, *NetRule, error) {
	orig := s
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil, errors.New("empty allow rule")
	}
	if len(s) > 300 {
		return nil, nil, fmt.Errorf("allow rule %.40q...: too long", s)
	}
	fail := func(format string, a ...any) (*HostPattern, *NetRule, error) {
		return nil, nil, fmt.Errorf("allow rule %q: %s", orig, fmt.Sprintf(format, a...))
	}
	var proto Proto
	for _, p := range []Proto{TCP, UDP} {
		if t, ok := strings.CutSuffix(s, "/"+string(p)); ok {
			s, proto = t, p
			break
		}
	}
	var host, portStr string
	hasPort := false
	switch {
	case strings.HasPrefix(s, "["):
		end := strings.Index(s, "]")
		if end < 0 {
			return fail("missing ]")
		}
		host, portStr = s[1:end], s[end+1:]
		if portStr != "" {
			if !strings.HasPrefix(portStr, ":") {
				return fail("unexpected %q after ]", portStr)
			}
			portStr, hasPort = portStr[1:], true
		}
		if !strings.Contains(host, ":") {
			return fail("brackets are only for IPv6 addresses")
		}
	case strings.Count(s, ":") > 1:
		host = s // IPv6 without a port
	default:
		var ok bool
		host, portStr, ok = strings.Cut(s, ":")
		hasPort = ok
	}
	var port uint16
	if hasPort {
		n, err := strconv.ParseUint(portStr, 10, 16)
		if err != nil || n == 0 || portStr != strconv.FormatUint(n, 10) {
			return fail("port %q: want a number from 1 to 65535", portStr)
		}
		port = uint16(n)
	}
	if strings.Contains(host, "/") {
		pfx, err := netip.ParsePrefix(host)
		if err != nil {
			return fail("bad CIDR: %v", err)
		}
		if pfx.Addr().Zone() != "" {
			return fail("zones are not allowed")
		}
		pfx = netip.PrefixFrom(pfx.Addr().Unmap(), pfx.Bits()-unmapBits(pfx))
		if pfx.Masked() != pfx {
			return fail("host bits set: did you mean %s?", pfx.Masked())
		}
		return nil, &NetRule{Prefix: pfx, Port: port, Proto: proto}, nil
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Zone() != "" {
			return fail("zones are not allowed")
		}
		ip = ip.Unmap()
		return nil, &NetRule{Prefix: netip.PrefixFrom(ip, ip.BitLen()), Port: port, Proto: proto}, nil
	}
	if proto != "" {
		return fail("/%s is only for address rules (host rules are TCP, through the proxy)", proto)
	}
	if strings.Contains(host, ":") || strings.Count(s, ":") > 1 {
		return fail("not a valid address")
	}
	wild := false
	if rest, ok := strings.CutPrefix(host, "*."); ok {
		wild, host = true, rest
	}
	name, err := NormalizeName(host)
	if err != nil {
		if strings.Contains(host, "*") {
			return fail("a wildcard is only allowed as the whole leftmost label (*.example.com)")
		}
		return fail("%v", err)
	}
	return &HostPattern{Domain: name, Wildcard: wild, Port: port}, nil, nil
}

// unmapBits is how many prefix bits a 4-in-6 mapped prefix loses when
// unmapped.
func unmapBits(p netip.Prefix) int {
	if p.Addr().Is4In6() {
		return 96
	}
	return 0
}

var idnaProfile = idna.New(
	idna.MapForLookup(),
	idna.BidiRule(),
	idna.ValidateLabels(true),
	idna.StrictDomainName(true),
	idna.VerifyDNSLength(true),
)

// NormalizeName turns a host name into the form rules and lookups compare:
// IDNA A-labels, lower case, no trailing dot. It refuses what is not a
// valid DNS host name (labels of letters, digits and hyphens, 1-63 bytes,
// 253 in total) and IP literals.
func NormalizeName(name string) (string, error) {
	n := strings.TrimSuffix(name, ".")
	if n == "" {
		return "", errors.New("empty host name")
	}
	if len(n) > 1024 {
		return "", errors.New("host name too long")
	}
	if !utf8.ValidString(n) {
		return "", fmt.Errorf("host name %q is not valid UTF-8", name)
	}
	a, err := idnaProfile.ToASCII(n)
	if err != nil {
		return "", fmt.Errorf("host name %q: %w", name, err)
	}
	a = strings.ToLower(a)
	// The A-label form must be stable (a punycode label that does not
	// decode to a valid name is refused).
	if again, err := idnaProfile.ToASCII(a); err != nil || again != a {
		return "", fmt.Errorf("host name %q: not a valid IDNA name", name)
	}
	if len(a) > 253 {
		return "", fmt.Errorf("host name %q: longer than 253 bytes", name)
	}
	for _, l := range strings.Split(a, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return "", fmt.Errorf("host name %q: bad label %q", name, l)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return "", fmt.Errorf("host name %q: bad character %q", name, c)
			}
		}
	}
	if _, err := netip.ParseAddr(a); err == nil {
		return "", fmt.Errorf("host name %q is an IP address", name)
	}
	// All-numeric last label: looks like an (odd form of an) IPv4 address.
	if last := a[strings.LastIndexByte(a, '.')+1:]; strings.Trim(last, "0123456789") == "" {
		return "", fmt.Errorf("host name %q: the last label is numeric", name)
	}
	return a, nil
}
