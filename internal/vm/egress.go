package vm

// A VM's egress policy: validated at create and at `vm set`, stored with
// the VM, applied to the running VM's network (see net.go and
// Networking.Egress).

import (
	"context"
	"slices"

	"banger/internal/api"
	"banger/internal/egress/policy"
	"banger/internal/model"
	"banger/internal/secrets"
)

// EgressEnforcer applies running bridge-mode VMs' egress policies: the
// DNS filter, the proxy's per-VM state and the firewall. Apply is given
// every running bridge-mode VM whose mode is allow (the complete set, as
// SetNAT is) and replaces what was applied before; VMs missing from the
// set lose their enforcement state.
type EgressEnforcer interface {
	Apply(ctx context.Context, vms []EgressVM) error
}

// EgressVM is one running VM under an allow policy.
type EgressVM struct {
	Name         string
	IP           string
	Policy       *policy.Policy
	Bindings     *secrets.Bindings
	EgressLogDir string // the VM's run dir, for its egress log
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
