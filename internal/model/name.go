package model

import (
	"errors"
	"fmt"
)

// MaxNameLen is the longest accepted VM name: one DNS label (RFC 1123).
const MaxNameLen = 63

// ValidateName checks a VM (or image, kernel) name. A name flows into the
// guest hostname, a DNS label, the kernel command line and on-disk paths, so
// it is held to the narrowest of those grammars: 1 to 63 characters of
// lowercase ASCII letters, digits and '-', not starting or ending with '-'.
// Names are never normalised: what the user typed is what is stored.
func ValidateName(name string) error {
	if name == "" {
		return errors.New("name must not be empty")
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("name %q is %d characters long; the limit is %d", name, len(name), MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-':
			if i == 0 || i == len(name)-1 {
				return fmt.Errorf("name %q must not start or end with '-'", name)
			}
		default:
			return fmt.Errorf("name %q may contain only lowercase letters, digits and '-' (found %q)", name, rune(c))
		}
	}
	return nil
}
