package engine

import (
	"fmt"
	"slices"
	"strings"
)

// Engine names: the values of a VM's engine field, of --engine and of the
// engine config key. This list is what the CLI, the config, shell
// completion and doctor offer; it lives here, in a package that links no
// driver, so that the CLI can use it. A registry of drivers (see Registry)
// must register exactly these (a test of the daemon's registry checks it).
const (
	QEMU        = "qemu"
	Firecracker = "firecracker"
	// Auto picks the registry's default engine (QEMU: it runs everywhere,
	// with KVM or TCG).
	Auto = "auto"
)

// Names lists the engines banger has, the default first.
func Names() []string { return []string{QEMU, Firecracker} }

// Choices lists what a user may ask for: Auto and every engine name.
func Choices() []string { return append([]string{Auto}, Names()...) }

// ValidChoice checks a user's engine choice (callers treat an unset one
// themselves). The error reads "must be auto, qemu or firecracker, got
// ...": callers name the setting in front of it.
func ValidChoice(name string) error {
	if slices.Contains(Choices(), name) {
		return nil
	}
	return fmt.Errorf("must be %s, got %q", orList(Choices()), name)
}

// Help describes the choices for a flag's help: "auto (qemu), qemu or
// firecracker".
func Help() string {
	c := Choices()
	c[0] += " (" + Names()[0] + ")"
	return orList(c)
}

// orList joins "a, b or c".
func orList(s []string) string {
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}
