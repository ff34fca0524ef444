package main

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// forbidden are packages the CLI must not link: it is a thin client of
// bangerd, which owns the store, the VMs, the engines and the images (and
// runs doctor's checks, which read them). An entry ending in "/" forbids
// every package under it.
var forbidden = []string{
	"banger/internal/vm",
	"banger/internal/store",
	"banger/internal/engine/", // the drivers and their shared VMM-process code
	"banger/internal/daemon",
	"banger/internal/doctor", // banger/internal/doctor/report is the CLI's part
	"banger/internal/image",
	"banger/internal/kernel",
	"banger/internal/oci",
	"banger/internal/dns",
	"banger/internal/guest",
}

// TestThinClient fails when `go list -deps` of this command names a
// forbidden package.
func TestThinClient(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go tool is not on PATH")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, gobin, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 2 {
		t.Fatalf("go list -deps listed %q", deps)
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if d == f || strings.HasSuffix(f, "/") && strings.HasPrefix(d, f) {
				t.Errorf("banger links %s (forbidden by %s)", d, f)
			}
		}
	}
}
