package model

// Rules on a VM's resources and network that the CLI, the config file and
// the daemon all check: one function each, so that every layer refuses the
// same values with the same words. field names the value where the user
// gave it ("--memory", "memory_mib", "memory") and starts the message.

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Resource limits of one VM.
const (
	MinVCPU      = 1
	MaxVCPU      = 64
	MinMemoryMiB = 128
	// MinDiskBytes is the smallest work disk (and disk_size) accepted.
	MinDiskBytes = 64 << 20
)

// Network modes of a VM. NetAuto is a setting, not a mode: bridge where
// banger may manage the host network, user otherwise.
const (
	NetBridge = "bridge"
	NetUser   = "user"
	NetNone   = "none"
	NetAuto   = "auto"
)

// CheckVCPU checks a VM's number of virtual CPUs.
func CheckVCPU(field string, n int) error {
	if n < MinVCPU || n > MaxVCPU {
		return fmt.Errorf("%s must be between %d and %d, got %d", field, MinVCPU, MaxVCPU, n)
	}
	return nil
}

// CheckMemoryMiB checks a VM's memory in MiB.
func CheckMemoryMiB(field string, n int) error {
	if n < MinMemoryMiB {
		return fmt.Errorf("%s must be at least %d MiB, got %d", field, MinMemoryMiB, n)
	}
	return nil
}

// ParseDiskSize parses a work disk size ("8G", "512M") and checks it
// against MinDiskBytes.
func ParseDiskSize(field, s string) (int64, error) {
	n, err := ParseSize(s)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", field, err)
	}
	if n < MinDiskBytes {
		return 0, fmt.Errorf("%s %s is too small (minimum 64M)", field, s)
	}
	return n, nil
}

// CheckNetworkMode checks a network mode: bridge, user or none, and also
// auto where allowAuto (the config file's setting).
func CheckNetworkMode(field, mode string, allowAuto bool) error {
	switch mode {
	case NetBridge, NetUser, NetNone:
		return nil
	case NetAuto:
		if allowAuto {
			return nil
		}
	}
	if allowAuto {
		return fmt.Errorf("%s must be auto, bridge, user or none, got %q", field, mode)
	}
	return fmt.Errorf("%s must be bridge, user or none, got %q", field, mode)
}

// CheckNetworkOptions checks what goes with a network mode: NAT and
// published ports need a network.
func CheckNetworkOptions(mode string, nat bool, publish int) error {
	if mode == NetNone && (nat || publish > 0) {
		return fmt.Errorf("--nat and --publish need a network (bridge or user)")
	}
	return nil
}

// ParseSize parses sizes like "512M", "8G", "1T" or a plain byte count.
// Suffixes are binary (G = GiB).
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(strings.ToUpper(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	mult := int64(1)
	if t != "" {
		switch t[len(t)-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult != 1 {
			t = t[:len(t)-1]
		}
	}
	n, err := strconv.ParseFloat(t, 64)
	// !(n > 0) also refuses NaN; the upper bound keeps the conversion
	// below defined.
	if err != nil || !(n > 0) || n*float64(mult) >= math.MaxInt64 {
		return 0, fmt.Errorf("invalid size %q (use e.g. 512M, 8G)", s)
	}
	return int64(n * float64(mult)), nil
}
