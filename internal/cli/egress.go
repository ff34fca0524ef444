package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"banger/internal/egress/policy"
	"banger/internal/model"
)

// egressFlags are the egress policy flags of vm create, vm run and vm set.
type egressFlags struct {
	mode        string
	allow       []string
	policyFile  string
	secrets     []string
	secretHosts []string
}

func (f *egressFlags) register(c *cobra.Command) {
	c.Flags().StringVar(&f.mode, "egress", "", "what the guest may reach beyond this host: none (default), all (the same as --nat) or allow (only --allow rules; implied by --allow, --secret or a policy file's rules)")
	c.Flags().StringArrayVar(&f.allow, "allow", nil, "let the guest reach HOST[:PORT] (*.DOMAIN for every name below DOMAIN), IP[:PORT] or CIDR[:PORT], optionally /tcp or /udp for addresses (repeatable)")
	c.Flags().StringVar(&f.policyFile, "policy", "", "read the egress policy from a TOML file (egress, allow, [[secret]] name/hosts/env/body); flags given too are added to it")
	c.Flags().StringArrayVar(&f.secrets, "secret", nil, "give the guest the secret NAME (see `banger secret set`) as a placeholder in $NAME, replaced by the real value only on requests to the --secret-host hosts (repeatable)")
	c.Flags().StringArrayVar(&f.secretHosts, "secret-host", nil, "a host (HOST[:PORT] or *.DOMAIN) every --secret may be sent to (repeatable); per-secret hosts and guest variable names go in a policy file")
}

// changed reports whether any egress flag was given.
func (f *egressFlags) changed(c *cobra.Command) bool {
	for _, n := range []string{"egress", "allow", "policy", "secret", "secret-host"} {
		if c.Flags().Changed(n) {
			return true
		}
	}
	return false
}

// spec reads the policy file (if any), merges the flags into it and
// validates the result, so bad input is refused before the daemon is
// asked anything. nat is the --nat flag (create only), the same as
// --egress all. It returns nil when no egress flag was given.
func (f *egressFlags) spec(c *cobra.Command, nat bool) (*policy.Spec, error) {
	if !f.changed(c) {
		return nil, nil
	}
	var s policy.Spec
	if f.policyFile != "" {
		var err error
		if s, err = policy.ParseFile(f.policyFile); err != nil {
			return nil, fmt.Errorf("--policy %s: %w", f.policyFile, err)
		}
	}
	if len(f.secretHosts) > 0 && len(f.secrets) == 0 {
		return nil, fmt.Errorf("--secret-host needs --secret")
	}
	if len(f.secrets) > 0 && len(f.secretHosts) == 0 {
		return nil, fmt.Errorf("--secret needs --secret-host: the hosts the secret may be sent to")
	}
	flags := policy.Spec{Egress: f.mode, Allow: f.allow}
	for _, name := range f.secrets {
		flags.Secrets = append(flags.Secrets, policy.SecretSpec{Name: name, Hosts: f.secretHosts})
	}
	s = s.Merge(flags)
	if nat {
		if s.Egress != "" && s.Egress != string(policy.All) {
			return nil, fmt.Errorf("--nat is --egress all; it cannot be combined with --egress %s", s.Egress)
		}
		s.Egress = string(policy.All)
	}
	if _, err := policy.Build(s); err != nil {
		return nil, fmt.Errorf("egress policy: %w", err)
	}
	return &s, nil
}

// egressText is the one-line summary of a VM's policy for vm show.
func egressText(v model.VM) string {
	if v.Egress == nil {
		if v.NAT {
			return string(policy.All)
		}
		return string(policy.None)
	}
	var parts []string
	parts = append(parts, v.Egress.Egress)
	if len(v.Egress.Allow) > 0 {
		parts = append(parts, "allow "+strings.Join(v.Egress.Allow, ", "))
	}
	for _, s := range v.Egress.Secrets {
		env := s.Env
		if env == "" {
			env = s.Name
		}
		parts = append(parts, fmt.Sprintf("secret %s as $%s for %s", s.Name, env, strings.Join(s.Hosts, ", ")))
	}
	return strings.Join(parts, "; ")
}
