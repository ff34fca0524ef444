package oci

import (
	"fmt"
	"strings"
)

// Limits on what a layer may hold. Names and link targets follow
// Linux's (NAME_MAX, PATH_MAX); extended attributes the kernel's
// (XATTR_NAME_MAX, XATTR_SIZE_MAX).
const (
	maxComponent  = 255
	maxPath       = 4095
	maxXattrName  = 255
	maxXattrValue = 64 << 10
	maxXattrs     = 64 // per entry
)

// xattrNamespaces are the extended attribute namespaces a layer may
// set. system.* (ACLs are the only common one) and anything else is
// refused: it would be interpreted by the guest kernel in ways banger
// does not check.
var xattrNamespaces = []string{"user.", "security.", "trusted."}

// checkEntryName checks a tar entry's name: no control characters, no
// component longer than NAME_MAX, not longer than PATH_MAX. cleanPath
// then refuses "..".
func checkEntryName(name string) error {
	if len(name) > maxPath {
		return fmt.Errorf("name of %d bytes is too long", len(name))
	}
	if err := noControl(name); err != nil {
		return fmt.Errorf("name: %w: refusing it", err)
	}
	for _, c := range strings.Split(name, "/") {
		if len(c) > maxComponent {
			return fmt.Errorf("name component of %d bytes is too long", len(c))
		}
	}
	return nil
}

// checkComponent checks one file name (no slash).
func checkComponent(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return fmt.Errorf("bad file name %q", name)
	case strings.ContainsRune(name, '/'):
		return fmt.Errorf("file name %q holds a slash", name)
	case len(name) > maxComponent:
		return fmt.Errorf("file name of %d bytes is too long", len(name))
	}
	return noControl(name)
}

// checkLinkTarget checks a symbolic or hard link's target.
func checkLinkTarget(target string) error {
	if target == "" {
		return fmt.Errorf("empty link target")
	}
	if len(target) > maxPath {
		return fmt.Errorf("link target of %d bytes is too long", len(target))
	}
	if err := noControl(target); err != nil {
		return fmt.Errorf("link target: %w: refusing it", err)
	}
	return nil
}

// checkXattrName checks an extended attribute name: one of the allowed
// namespaces, something after it, no control characters, not longer
// than XATTR_NAME_MAX.
func checkXattrName(name string) error {
	if len(name) > maxXattrName {
		return fmt.Errorf("extended attribute name of %d bytes is too long", len(name))
	}
	if err := noControl(name); err != nil {
		return fmt.Errorf("extended attribute name: %w: refusing it", err)
	}
	for _, ns := range xattrNamespaces {
		if rest, ok := strings.CutPrefix(name, ns); ok && rest != "" {
			return nil
		}
	}
	return fmt.Errorf("extended attribute %q: only the user., security. and trusted. namespaces are allowed", name)
}

// checkXattrValue bounds an extended attribute's value. Values may be
// binary (security.capability is); they never reach the debugfs
// script, only a file it reads.
func checkXattrValue(name string, v []byte) error {
	if len(v) > maxXattrValue {
		return fmt.Errorf("extended attribute %q: value of %d bytes is too long", name, len(v))
	}
	return nil
}
