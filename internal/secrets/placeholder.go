package secrets

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"regexp"
	"sort"

	"banger/internal/egress/policy"
)

// PlaceholderPrefix starts every placeholder.
const PlaceholderPrefix = "banger-secret-"

// placeholderRE matches a placeholder anywhere in a text.
var placeholderRE = regexp.MustCompile(PlaceholderPrefix + `[0-9a-f]{32}`)

// NewPlaceholder returns a fresh placeholder: the prefix and 128 random
// bits in hex.
func NewPlaceholder() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("new placeholder: %w", err)
	}
	return PlaceholderPrefix + hex.EncodeToString(b[:]), nil
}

// IsPlaceholder reports whether s is exactly one well-formed placeholder.
func IsPlaceholder(s string) bool {
	return len(s) == len(PlaceholderPrefix)+32 && placeholderRE.MatchString(s)
}

// FindPlaceholders returns every placeholder-shaped string in s, in order
// of appearance (duplicates kept).
func FindPlaceholders(s string) []string { return placeholderRE.FindAllString(s, -1) }

// Binding ties one VM's placeholder to a secret and the hosts the secret
// may be sent to.
type Binding struct {
	Placeholder string
	Secret      policy.Secret
}

// Bindings are one VM's placeholders. They are immutable once made; a
// policy change on a running VM makes new Bindings with Rebind so that a
// secret keeps its placeholder (the guest's environment stays valid).
type Bindings struct {
	byPlaceholder map[string]Binding
	bySecret      map[string]string // secret name -> placeholder
}

// Bind makes a placeholder for each secret of p.
func Bind(p *policy.Policy) (*Bindings, error) { return Restore(p, nil) }

// Rebind makes Bindings for p, keeping the placeholder old gave a secret
// that p still names (old may be nil).
func Rebind(old *Bindings, p *policy.Policy) (*Bindings, error) {
	var saved map[string]string
	if old != nil {
		saved = old.bySecret
	}
	return Restore(p, saved)
}

// Restore makes Bindings for p reusing saved placeholders (secret name ->
// placeholder, as Placeholders returned them and the daemon stored them
// with the VM), so a VM keeps its guest environment across daemon
// restarts. A saved placeholder that is not well formed is an error.
func Restore(p *policy.Policy, saved map[string]string) (*Bindings, error) {
	b := &Bindings{byPlaceholder: map[string]Binding{}, bySecret: map[string]string{}}
	for _, s := range p.Secrets {
		ph := saved[s.Name]
		if ph != "" && !IsPlaceholder(ph) {
			return nil, fmt.Errorf("restore secret %q: malformed placeholder", s.Name)
		}
		if ph == "" {
			var err error
			if ph, err = NewPlaceholder(); err != nil {
				return nil, err
			}
		}
		if _, dup := b.byPlaceholder[ph]; dup { // 2^-128: but never map two secrets to one
			return nil, fmt.Errorf("bind secret %q: placeholder collision", s.Name)
		}
		b.byPlaceholder[ph] = Binding{Placeholder: ph, Secret: s}
		b.bySecret[s.Name] = ph
	}
	return b, nil
}

// Lookup returns the binding of a placeholder.
func (b *Bindings) Lookup(placeholder string) (Binding, bool) {
	if b == nil {
		return Binding{}, false
	}
	v, ok := b.byPlaceholder[placeholder]
	return v, ok
}

// Placeholder returns the placeholder of the secret name.
func (b *Bindings) Placeholder(secret string) (string, bool) {
	if b == nil {
		return "", false
	}
	ph, ok := b.bySecret[secret]
	return ph, ok
}

// Env is what the guest agent puts in the environment of exec, sessions
// and ssh logins: guest variable name -> placeholder.
func (b *Bindings) Env() map[string]string {
	env := map[string]string{}
	if b == nil {
		return env
	}
	for ph, bd := range b.byPlaceholder {
		env[bd.Secret.Env] = ph
	}
	return env
}

// Placeholders returns secret name -> placeholder, for the daemon to
// store with the VM (see Restore).
func (b *Bindings) Placeholders() map[string]string {
	out := map[string]string{}
	if b != nil {
		for k, v := range b.bySecret {
			out[k] = v
		}
	}
	return out
}

// All returns the bindings sorted by secret name.
func (b *Bindings) All() []Binding {
	if b == nil {
		return nil
	}
	out := make([]Binding, 0, len(b.byPlaceholder))
	for _, bd := range b.byPlaceholder {
		out = append(out, bd)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Secret.Name < out[j].Secret.Name })
	return out
}
