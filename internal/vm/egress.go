package vm

// A VM's egress policy: validated at create and at `vm set`, stored with
// the VM, applied to the running VM's network (see net.go and
// Networking.Egress).

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"slices"

	"banger/internal/api"
	"banger/internal/egress/policy"
	"banger/internal/model"
	"banger/internal/network"
	"banger/internal/secrets"
)

// EgressEnforcer applies running bridge-mode VMs' egress policies in the
// daemon: the DNS filter and the proxy's per-VM state (the firewall is
// network.Host's). Apply is given every running bridge-mode VM whose
// mode is allow (the complete set, as SetNAT is) and replaces what was
// applied before; VMs missing from the set lose their enforcement state
// and open proxied connections.
type EgressEnforcer interface {
	// ProxyPort is the proxy's TCP port on the bridge address; 0 when it
	// does not listen (then allow policies cannot be enforced).
	ProxyPort() uint16
	Apply(ctx context.Context, vms []EgressVM) error
	// CACert is the PEM certificate of banger's egress CA, which signs
	// the proxy's certificates for hosts a secret goes to; guests with
	// secrets trust it.
	CACert() []byte
}

// Where a guest with secrets gets banger's CA: its own file (Node's
// NODE_EXTRA_CA_CERTS) and appended to the system bundle Debian-like
// guests and Go, curl, Python requests and OpenSSL read.
const (
	guestCAFile      = "/usr/local/share/ca-certificates/banger-egress-ca.crt"
	guestCABundle    = "/etc/ssl/certs/ca-certificates.crt"
	maxGuestCABundle = 8 << 20
)

// hasSecrets reports whether vm's policy gives it secrets.
func hasSecrets(vm *model.VM) bool {
	return vm.Egress != nil && vm.Egress.Egress == string(policy.Allow) && len(vm.Egress.Secrets) > 0
}

// installCA puts banger's egress CA into the guest's trust store (through
// the agent's file operations, so nothing of the guest's is executed) if
// the VM has secrets. Idempotent: the bundle is appended to once.
func (m *Manager) installCA(ctx context.Context, vm *model.VM) error {
	if !hasSecrets(vm) || m.net == nil || m.net.Egress == nil || vm.Network != NetBridge {
		return nil
	}
	caPEM := m.net.Egress.CACert()
	if len(caPEM) == 0 {
		return nil
	}
	c, err := m.FileAgent(ctx, vm.ID)
	if err != nil {
		return err
	}
	if _, err := c.FileWrite(ctx, guestCAFile, "0644", true, bytes.NewReader(caPEM)); err != nil {
		return fmt.Errorf("install the egress ca in vm %q: %w", vm.Name, err)
	}
	var bundle []byte
	if _, rc, err := c.FileRead(ctx, guestCABundle, maxGuestCABundle); err == nil {
		bundle, err = io.ReadAll(io.LimitReader(rc, maxGuestCABundle))
		rc.Close()
		if err != nil {
			return fmt.Errorf("read the ca bundle of vm %q: %w", vm.Name, err)
		}
	}
	if bytes.Contains(bundle, bytes.TrimSpace(caPEM)) {
		return nil
	}
	if len(bundle) > 0 && !bytes.HasSuffix(bundle, []byte("\n")) {
		bundle = append(bundle, '\n')
	}
	bundle = append(bundle, caPEM...)
	if _, err := c.FileWrite(ctx, guestCABundle, "0644", true, bytes.NewReader(bundle)); err != nil {
		return fmt.Errorf("install the egress ca in vm %q: %w", vm.Name, err)
	}
	return nil
}

// EgressVM is one running VM under an allow policy.
type EgressVM struct {
	Name      string
	IP        string
	Policy    *policy.Policy
	Bindings  *secrets.Bindings
	EgressLog string // the VM's egress log file
}

// egressLogFile is where a VM's egress log lives (its state dir: the log
// outlives a stop, for `vm egress`).
func (m *Manager) egressLogFile(id string) string {
	return filepath.Join(m.layout.VMDir(id), "egress.jsonl")
}

// netAllows turns a policy's address rules into firewall rules (IPv4
// only: guests have no IPv6).
func netAllows(pol *policy.Policy) []network.NetAllow {
	var out []network.NetAllow
	for _, r := range pol.Nets {
		if !r.Prefix.Addr().Unmap().Is4() {
			continue
		}
		p := r.Prefix
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
		}
		switch {
		case r.Proto != "":
			out = append(out, network.NetAllow{Net: p, Proto: string(r.Proto), Port: r.Port})
		case r.Port != 0:
			out = append(out, network.NetAllow{Net: p, Proto: "tcp", Port: r.Port}, network.NetAllow{Net: p, Proto: "udp", Port: r.Port})
		default:
			out = append(out, network.NetAllow{Net: p})
		}
	}
	return out
}

// egressPolicy turns a create's or a set's egress input into the spec to
// store (its mode made explicit) and the validated policy. nat is the old
// --nat flag, the same as mode all.
func egressPolicy(spec *policy.Spec, nat bool) (*policy.Spec, *policy.Policy, error) {
	var s policy.Spec
	if spec != nil {
		s = *spec
		s.Allow = slices.Clone(spec.Allow)
		s.Secrets = slices.Clone(spec.Secrets)
	}
	if nat {
		if s.Egress != "" && s.Egress != string(policy.All) {
			return nil, nil, api.Errorf(api.CodeBadRequest, "--nat is --egress all; it cannot be combined with --egress %s", s.Egress)
		}
		if len(s.Allow) > 0 || len(s.Secrets) > 0 {
			return nil, nil, api.Errorf(api.CodeBadRequest, "--nat (--egress all) cannot be combined with --allow or secrets: use --egress allow")
		}
		s.Egress = string(policy.All)
	}
	pol, err := policy.Build(s)
	if err != nil {
		return nil, nil, api.Errorf(api.CodeBadRequest, "egress policy: %v", err)
	}
	if pol.Mode == policy.All && (len(pol.Hosts)+len(pol.Nets)+len(pol.Secrets) > 0) {
		return nil, nil, api.Errorf(api.CodeBadRequest, "egress all lets everything out: allow rules and secrets need --egress allow")
	}
	s.Egress = string(pol.Mode)
	return &s, pol, nil
}

// vmPolicy is the stored VM's validated policy (VMs made before policies:
// their NAT flag).
func vmPolicy(vm *model.VM) (*policy.Policy, error) {
	if vm.Egress == nil {
		if vm.NAT {
			return &policy.Policy{Mode: policy.All}, nil
		}
		return &policy.Policy{Mode: policy.None}, nil
	}
	_, pol, err := egressPolicy(vm.Egress, false)
	return pol, err
}

// checkEgressNetwork refuses policies the VM's network cannot enforce.
func checkEgressNetwork(network string, pol *policy.Policy) error {
	if pol.Mode == policy.None {
		return nil
	}
	switch network {
	case NetNone:
		return api.Errorf(api.CodeBadRequest, "--egress %s needs a network (bridge or user)", pol.Mode)
	case NetUser:
		if pol.Mode == policy.Allow {
			return api.Errorf(api.CodeBadRequest, "--egress allow (--allow, --policy, --secret) is enforced in bridge mode only so far; use --network bridge")
		}
	}
	return nil
}

// setEgress validates a new policy for vm and records it in vm (not in the
// store): spec, NAT flag and secret placeholders (kept for secrets the VM
// already had).
func setEgress(vm *model.VM, spec *policy.Spec, nat bool) (*policy.Policy, error) {
	s, pol, err := egressPolicy(spec, nat)
	if err != nil {
		return nil, err
	}
	if err := checkEgressNetwork(vm.Network, pol); err != nil {
		return nil, err
	}
	b, err := secrets.Restore(pol, vm.EgressPlaceholders)
	if err != nil {
		return nil, api.Errorf(api.CodeBadRequest, "egress policy: %v", err)
	}
	vm.Egress, vm.NAT = s, pol.Mode == policy.All
	vm.EgressPlaceholders = b.Placeholders()
	return pol, nil
}

// egressEnv is the environment the guest's commands get for the VM's
// secrets: each secret's guest variable holding the VM's placeholder
// (never the real value), sorted. The caller's own variables come after
// and so win.
func egressEnv(vm *model.VM) []string {
	if vm.Egress == nil || len(vm.Egress.Secrets) == 0 {
		return nil
	}
	pol, err := vmPolicy(vm)
	if err != nil {
		return nil
	}
	b, err := secrets.Restore(pol, vm.EgressPlaceholders)
	if err != nil {
		return nil
	}
	var env []string
	for k, v := range b.Env() {
		env = append(env, k+"="+v)
	}
	if vm.Network == NetBridge {
		env = append(env, "NODE_EXTRA_CA_CERTS="+guestCAFile, "REQUESTS_CA_BUNDLE="+guestCABundle,
			"CURL_CA_BUNDLE="+guestCABundle, "SSL_CERT_FILE="+guestCABundle)
	}
	slices.Sort(env)
	return env
}

// EgressLogPath returns the name of the VM ref and where its egress log
// is.
func (m *Manager) EgressLogPath(ctx context.Context, ref string) (string, string, error) {
	vm, err := m.Get(ctx, ref)
	if err != nil {
		return "", "", err
	}
	return vm.Name, m.egressLogFile(vm.ID), nil
}
