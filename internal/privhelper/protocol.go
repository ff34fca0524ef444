// Package privhelper is banger's privileged helper: a small root process that
// performs the few network operations bridge mode needs root for (the bridge,
// taps owned by the daemon's user, NAT rules, the DNS sockets on the bridge
// address) on behalf of the unprivileged daemon, over a Unix socket.
//
// # Protocol
//
// One connection carries one request and one response, each a single JSON
// object on one line. The client writes
//
//	{"v":1,"op":"release_tap","tap":"bgtap3"}
//
// and the server answers
//
//	{"ok":true}                                            (success)
//	{"ok":false,"error":{"code":"not_tap","message":"…"}}  (failure)
//
// then closes the connection. The operations are an explicit allow-list,
// mirroring network.Host minus Teardown, plus the DNS sockets:
//
//	op             request fields     response fields
//	ensure_bridge  -                  -
//	acquire_tap    binding (required) tap
//	release_tap    tap                -
//	set_nat        guests (required)  -
//	set_egress     guests, egress     -   (network.Host.SetEgress; checked by network.EgressRuleset)
//	state          -                  state, config
//	dns_sockets    -                  dns (+ 2 descriptors, SCM_RIGHTS)
//
// Any other op is refused (unknown_op), as is a request with fields the op
// does not take, unknown fields or another protocol version. There is no
// generic "run a command" operation and no teardown: the helper never deletes
// the bridge or taps on its own, it only releases taps the daemon hands back.
//
// Before reading a request the server checks the caller's peer credentials
// (SO_PEERCRED): only the allowed uid (the daemon's owner) and root may call;
// anyone else gets a forbidden error and the refusal is logged. Arguments are
// validated again on the server: a tap name must have the configured prefix
// and a decimal index, NAT guests and a binding's address must be guest
// addresses of the bridge subnet and a binding's MAC a unicast Ethernet
// address. A tap is bound ({"mac":…,"ip":…}) when it is handed out: from then
// on it may send only from that MAC and address (network.BridgeRuleset).
// The helper hands out at most a bounded number of taps that no VMM has
// opened yet, and keeps at most network.Config.MaxTaps taps in all.
//
// Closing the connection, or only its write side, before the response
// arrives cancels the operation (release_tap still completes, as
// network.Host requires). The Client half-closes and keeps reading for a
// moment, so that a tap acquired just as it gave up reaches it and is
// released; a tap whose answer cannot be delivered at all (the client is
// gone) is released by the server.
//
// The dns_sockets response carries two file descriptors in the same message
// as its JSON line: a UDP socket and a listening TCP socket, both bound to
// port 53 of the bridge address (in that order, as listed in dns.fds). The
// helper binds them once, with IP_FREEBIND so that the bridge need not exist
// yet, keeps them for its lifetime and hands duplicates of the same sockets to
// every later request: a restarted daemon gets the sockets back (with any
// queued queries) instead of racing a rebind against descriptors a dying
// daemon may still hold.
package privhelper

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"

	"banger/internal/network"
)

// ProtocolVersion is the version of the wire protocol; requests carry it in
// "v" and the server refuses any other.
const ProtocolVersion = 1

// DefaultSocket is where banger-helper listens unless told otherwise.
const DefaultSocket = "/run/banger/helper.sock"

// ForwardRecord is where a helper listening on socket records the value
// net.ipv4.ip_forward had before it first turned forwarding on (next to the
// socket, in /run: forwarding resets at boot too), and where `banger system
// uninstall` finds it to restore.
func ForwardRecord(socket string) string {
	return filepath.Join(filepath.Dir(socket), "ip_forward.before")
}

// Operation names: the complete allow-list.
const (
	OpEnsureBridge = "ensure_bridge"
	OpAcquireTap   = "acquire_tap"
	OpReleaseTap   = "release_tap"
	OpSetNAT       = "set_nat"
	OpSetEgress    = "set_egress"
	OpState        = "state"
	OpDNSSockets   = "dns_sockets"
)

// Ops lists every operation the server accepts.
func Ops() []string {
	return []string{OpEnsureBridge, OpAcquireTap, OpReleaseTap, OpSetNAT, OpSetEgress, OpState, OpDNSSockets}
}

func knownOp(op string) bool {
	switch op {
	case OpEnsureBridge, OpAcquireTap, OpReleaseTap, OpSetNAT, OpSetEgress, OpState, OpDNSSockets:
		return true
	}
	return false
}

// Error codes of failed responses.
const (
	// CodeForbidden: the caller's uid is neither the allowed uid nor root.
	CodeForbidden = "forbidden"
	// CodeUnknownOp: the op is not in the allow-list.
	CodeUnknownOp = "unknown_op"
	// CodeBadVersion: the request's protocol version is not ProtocolVersion.
	CodeBadVersion = "bad_version"
	// CodeBadRequest: malformed JSON, unknown or misplaced fields, or
	// arguments that fail validation.
	CodeBadRequest = "bad_request"
	// CodeNoBridge: network.ErrNoBridge.
	CodeNoBridge = "no_bridge"
	// CodeNotTap: network.ErrNotTap.
	CodeNotTap = "not_tap"
	// CodeTapLimit: network.ErrTapLimit.
	CodeTapLimit = "tap_limit"
	// CodeFailed: the operation itself failed.
	CodeFailed = "failed"
)

// Errors a Client's calls wrap (through *Error); test with errors.Is. Codes
// no_bridge and not_tap match network.ErrNoBridge and network.ErrNotTap.
var (
	ErrForbidden  = errors.New("caller not allowed by the privileged helper")
	ErrUnknownOp  = errors.New("operation not offered by the privileged helper")
	ErrBadVersion = errors.New("privileged helper speaks another protocol version")
	ErrBadRequest = errors.New("request refused by the privileged helper")
	// ErrNotOffered is returned by Client.Teardown: the helper never tears
	// the bridge down on a client's request.
	ErrNotOffered = fmt.Errorf("not offered by the privileged helper: %w", errors.ErrUnsupported)
)

// Error is a failure reported by the helper.
type Error struct {
	// Op is the operation that failed.
	Op string
	// Code is one of the Code constants (an unknown code from a newer
	// helper is kept as is).
	Code string
	// Message is the helper's description of the failure.
	Message string
}

// Error implements error.
func (e *Error) Error() string {
	return fmt.Sprintf("privileged helper: %s: %s", e.Op, e.Message)
}

// Unwrap returns the sentinel error of e's code, if any.
func (e *Error) Unwrap() error {
	switch e.Code {
	case CodeForbidden:
		return ErrForbidden
	case CodeUnknownOp:
		return ErrUnknownOp
	case CodeBadVersion:
		return ErrBadVersion
	case CodeBadRequest:
		return ErrBadRequest
	case CodeNoBridge:
		return network.ErrNoBridge
	case CodeNotTap:
		return network.ErrNotTap
	case CodeTapLimit:
		return network.ErrTapLimit
	}
	return nil
}

// request is the wire form of a request. Fields an op does not take must be
// absent (or null).
type request struct {
	Version int    `json:"v"`
	Op      string `json:"op"`
	// Tap is release_tap's tap name.
	Tap string `json:"tap,omitempty"`
	// Binding is acquire_tap's MAC and address the tap may send from.
	Binding *network.Binding `json:"binding,omitempty"`
	// Guests is set_nat's complete set of NAT guests; required for
	// set_nat (an empty list clears NAT), so a pointer: absent and empty
	// differ.
	Guests *[]netip.Addr `json:"guests,omitempty"`
	// Egress is set_egress's filtered guests (with Guests, the NAT ones).
	Egress *network.Egress `json:"egress,omitempty"`
}

// response is the wire form of a response.
type response struct {
	OK    bool       `json:"ok"`
	Error *wireError `json:"error,omitempty"`
	// Tap is acquire_tap's result.
	Tap string `json:"tap,omitempty"`
	// State and Config are state's result.
	State  *wireState  `json:"state,omitempty"`
	Config *wireConfig `json:"config,omitempty"`
	// DNS describes the descriptors passed with a dns_sockets response.
	DNS *wireDNS `json:"dns,omitempty"`
}

type wireError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// wireDNS describes the sockets passed with SCM_RIGHTS.
type wireDNS struct {
	// Addr is the address both sockets are bound to.
	Addr netip.AddrPort `json:"addr"`
	// FDs names the passed descriptors in order: "udp", "tcp".
	FDs []string `json:"fds"`
}

// dnsFDs is the order of the descriptors of a dns_sockets response.
var dnsFDs = []string{"udp", "tcp"}

// wireConfig is the helper's network configuration, so that the daemon
// allocates guest addresses in the subnet the helper's bridge really has.
type wireConfig struct {
	Bridge      string       `json:"bridge"`
	CIDR        netip.Prefix `json:"cidr"`
	TapPrefix   string       `json:"tap_prefix"`
	TapPoolSize int          `json:"tap_pool_size"`
	TapOwner    int          `json:"tap_owner"`
	Table       string       `json:"table"`
	// IsolateGuests is network.Config.IsolateGuests (guest_to_guest =
	// false).
	IsolateGuests bool   `json:"isolate_guests,omitempty"`
	MaxTaps       int    `json:"max_taps,omitempty"`
	ForwardRecord string `json:"forward_record,omitempty"`
}

func toWireConfig(c network.Config) *wireConfig {
	return &wireConfig{Bridge: c.Bridge, CIDR: c.CIDR, TapPrefix: c.TapPrefix, TapPoolSize: c.TapPoolSize, TapOwner: c.TapOwner, Table: c.Table,
		IsolateGuests: c.IsolateGuests, MaxTaps: c.MaxTaps, ForwardRecord: c.ForwardRecord}
}

// config converts back. TapPoolSize 0 on the wire means an empty pool (the
// helper reports its configuration with defaults applied), which
// network.Config spells -1.
func (w *wireConfig) config() network.Config {
	pool := w.TapPoolSize
	if pool == 0 {
		pool = -1
	}
	return network.Config{Bridge: w.Bridge, CIDR: w.CIDR, TapPrefix: w.TapPrefix, TapPoolSize: pool, TapOwner: w.TapOwner, Table: w.Table,
		IsolateGuests: w.IsolateGuests, MaxTaps: w.MaxTaps, ForwardRecord: w.ForwardRecord}
}

// wireState is network.State with stable JSON names.
type wireState struct {
	Bridge       string                     `json:"bridge"`
	BridgeExists bool                       `json:"bridge_exists"`
	BridgeUp     bool                       `json:"bridge_up"`
	BridgeAddrs  []netip.Prefix             `json:"bridge_addrs,omitempty"`
	Forwarding   bool                       `json:"forwarding"`
	Pool         []string                   `json:"pool,omitempty"`
	InUse        []string                   `json:"in_use,omitempty"`
	Unknown      []string                   `json:"unknown,omitempty"`
	Missing      []string                   `json:"missing,omitempty"`
	PoolError    string                     `json:"pool_error,omitempty"`
	Table        bool                       `json:"table"`
	Bindings     map[string]network.Binding `json:"bindings,omitempty"`
	NATGuests    []netip.Addr               `json:"nat_guests,omitempty"`
	RulesInSync  bool                       `json:"rules_in_sync"`
}

func toWireState(s network.State) *wireState {
	return &wireState{
		Bridge: s.Bridge, BridgeExists: s.BridgeExists, BridgeUp: s.BridgeUp, BridgeAddrs: s.BridgeAddrs,
		Forwarding: s.Forwarding, Pool: s.Pool, InUse: s.InUse, Unknown: s.Unknown, Missing: s.Missing,
		PoolError: s.PoolError, Table: s.Table, Bindings: s.Bindings, NATGuests: s.NATGuests, RulesInSync: s.RulesInSync,
	}
}

func (w *wireState) state() network.State {
	return network.State{
		Bridge: w.Bridge, BridgeExists: w.BridgeExists, BridgeUp: w.BridgeUp, BridgeAddrs: w.BridgeAddrs,
		Forwarding: w.Forwarding, Pool: w.Pool, InUse: w.InUse, Unknown: w.Unknown, Missing: w.Missing,
		PoolError: w.PoolError, Table: w.Table, Bindings: w.Bindings, NATGuests: w.NATGuests, RulesInSync: w.RulesInSync,
	}
}

// Limits of the wire.
const (
	// maxRequest bounds a request line: a set_nat for a /16 fits.
	maxRequest = 2 << 20
	// maxResponse bounds a response line.
	maxResponse = 4 << 20
)

// validTap reports whether name is prefix followed by a decimal index
// without leading zeros, the only names network.Host gives its taps.
func validTap(prefix, name string) bool {
	digits, ok := strings.CutPrefix(name, prefix)
	if !ok || len(name) > 15 || digits == "" || len(digits) > 1 && digits[0] == '0' {
		return false
	}
	for _, r := range digits {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// validGuest reports whether a is a guest address of the bridge subnet: IPv4,
// inside cidr, neither the network, the broadcast nor the bridge's address.
func validGuest(cidr netip.Prefix, a netip.Addr) bool {
	if !a.Is4() || !cidr.Addr().Is4() {
		return false
	}
	sub := cidr.Masked()
	if !sub.Contains(a) || a == cidr.Addr() || a == sub.Addr() {
		return false
	}
	b := a.As4()
	host := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	mask := uint32(1)<<(32-cidr.Bits()) - 1
	return host&mask != mask
}
