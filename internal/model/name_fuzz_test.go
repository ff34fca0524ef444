package model

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

// FuzzValidateName: every accepted name is a DNS label of at most
// MaxNameLen bytes, so it is safe as a file name, a host name in the ssh
// config and a *.vm DNS name; every refusal is a one-line error that
// quotes the name (no raw control characters reach a terminal or a log).
func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"dev", "a", "a-b-1", "-a", "a-", "A", "a_b", "a.b", "..", "a/b", "a\nb",
		"\x1b[2J", strings.Repeat("x", MaxNameLen), strings.Repeat("x", MaxNameLen+1), "ü", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := ValidateName(name)
		if err == nil {
			if !dnsLabel.MatchString(name) || len(name) > MaxNameLen {
				t.Fatalf("accepted %q, not a DNS label of at most %d bytes", name, MaxNameLen)
			}
			if filepath.Base(name) != name || name == "." || name == ".." {
				t.Fatalf("accepted %q, not a single path component", name)
			}
			return
		}
		for _, c := range err.Error() {
			if c < 0x20 || c == 0x7f {
				t.Fatalf("error for %q holds control character %#x: %q", name, c, err.Error())
			}
		}
	})
}
