package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"banger/internal/egress/egresslog"
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

func (a *App) vmEgressCmd() *cobra.Command {
	var follow, asJSON bool
	c := &cobra.Command{
		Use:   "egress NAME",
		Short: "Show a VM's egress log: every connection attempt, allowed or refused",
		Long: "Show the egress log of a VM under an allow policy: time, name (SNI, Host or CONNECT), address,\n" +
			"port, verdict, bytes and whether a secret was substituted. --follow keeps printing new records.",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completeVMArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := vmPath(args[0], "/egress")
			if follow {
				path += "?follow=1"
			}
			if asJSON {
				return a.call(cmd.Context(), "GET", path, nil, a.Stdout)
			}
			pw := &egressPrinter{out: a.Stdout}
			err := a.call(cmd.Context(), "GET", path, nil, pw)
			pw.flush()
			return err
		},
	}
	c.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new records")
	c.Flags().BoolVar(&asJSON, "json", false, "print the records as JSON lines")
	return c
}

// egressPrinter turns the daemon's JSON lines into one text line each.
type egressPrinter struct {
	out  io.Writer
	part []byte
}

func (p *egressPrinter) Write(b []byte) (int, error) {
	p.part = append(p.part, b...)
	for {
		i := bytes.IndexByte(p.part, '\n')
		if i < 0 {
			break
		}
		p.line(p.part[:i])
		p.part = p.part[i+1:]
	}
	if len(p.part) > egresslog.MaxLine {
		p.part = p.part[:0]
	}
	return len(b), nil
}

func (p *egressPrinter) flush() {
	if len(p.part) > 0 {
		p.line(p.part)
		p.part = nil
	}
}

func (p *egressPrinter) line(b []byte) {
	var r egresslog.Record
	if json.Unmarshal(b, &r) != nil {
		return
	}
	dest := r.IP
	if r.Port != 0 {
		dest = net.JoinHostPort(r.IP, strconv.Itoa(int(r.Port)))
	}
	name := r.Name
	if name == "" {
		name = "-"
	}
	secret := ""
	if r.Secret {
		secret = " secret:" + strings.Join(r.Secrets, ",")
	}
	reason := ""
	if r.Reason != "" {
		reason = " (" + r.Reason + ")"
	}
	fmt.Fprintf(p.out, "%s %-5s %s %s %s/%s up:%d down:%d%s%s\n", r.Time.Local().Format("15:04:05"), r.Verdict, name, dest,
		r.Proto, r.Kind, r.BytesUp, r.BytesDown, secret, reason)
}
