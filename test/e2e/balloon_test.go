//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// memUsage is vm show --json's memory_usage, in bytes.
type memUsage struct {
	HostRSS        int64  `json:"host_rss"`
	GuestTotal     int64  `json:"guest_total"`
	GuestUsed      int64  `json:"guest_used"`
	GuestAvailable int64  `json:"guest_available"`
	Balloon        string `json:"balloon"`
	GuestError     string `json:"guest_error"`
}

func (u memUsage) String() string {
	return "host rss " + mibs(u.HostRSS) + ", guest used " + mibs(u.GuestUsed) + " of " + mibs(u.GuestTotal) + ", balloon " + u.Balloon
}

func mibs(n int64) string { return fmt.Sprintf("%d MiB", n>>20) }

func showMemory(t *testing.T, ctx context.Context, name string) memUsage {
	t.Helper()
	r := must(t, e.cli(ctx, "", "vm", "show", "--json", name))
	var v struct {
		Memory *memUsage `json:"memory_usage"`
	}
	jsonUnmarshal(t, r.stdout, &v)
	if v.Memory == nil {
		t.Fatalf("vm show --json has no memory_usage for a running vm:\n%s", r.stdout)
	}
	if v.Memory.GuestError != "" || v.Memory.GuestTotal == 0 {
		t.Fatalf("guest memory unknown: %+v", *v.Memory)
	}
	return *v.Memory
}

// Margins of TestBalloonReturnsMemory. reclaimMargin is how far above the
// guest's own use (MemTotal - MemFree) the VMM's RSS may stay once the
// guest freed what it touched: QEMU's own heap and, under TCG, its
// translation cache (see README, "Memory"). touched is how much of the
// 400 MiB must have reached the host while it was in use.
const (
	reclaimMargin = 128 << 20
	touched       = 300 << 20
)

// TestBalloonReturnsMemory: a guest touches 400 MiB, frees it, and the
// VMM's resident memory falls back to about what the guest uses, through
// the balloon's free page reporting. Without the balloon (config balloon
// = false) the RSS stays up and this fails.
func TestBalloonReturnsMemory(t *testing.T) {
	ctx := ctxFor(t, 10*time.Minute)
	// 1 GiB, so that 400 MiB in a tmpfs fits beside the booted guest.
	name := newVM(t, ctx, "balloon", "--memory", "1024")
	before := showMemory(t, ctx, name)
	t.Logf("idle after boot: %v", before)
	if before.Balloon != "reporting" {
		t.Errorf("balloon %q, want reporting (a balloon device driven by the guest)", before.Balloon)
	}
	if l := must(t, e.cli(ctx, "", "vm", "list")); !strings.Contains(l.stdout, "HOST RSS") {
		t.Errorf("vm list has no host rss column:\n%s", l.stdout)
	}

	// Touch 400 MiB: a file in a tmpfs is guest memory, and zeros written
	// to it still allocate every page.
	must(t, e.cli(ctx, "", "vm", "exec", name, "--", "sh", "-c",
		"mkdir -p /run/balloon-test && mount -t tmpfs -o size=420m balloon-test /run/balloon-test && head -c 400M /dev/zero > /run/balloon-test/fill"))
	full := showMemory(t, ctx, name)
	t.Logf("400 MiB touched: %v", full)
	if full.HostRSS < before.HostRSS+touched {
		t.Fatalf("host rss %s did not grow by %s from %s: the guest's allocation never reached the host", mibs(full.HostRSS), mibs(touched), mibs(before.HostRSS))
	}

	must(t, e.cli(ctx, "", "vm", "exec", name, "--", "sh", "-c", "rm /run/balloon-test/fill && umount /run/balloon-test"))
	freedAt := time.Now()
	var last memUsage
	for deadline := time.Now().Add(120 * time.Second); ; {
		last = showMemory(t, ctx, name)
		if last.HostRSS <= last.GuestUsed+reclaimMargin {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("120 s after the guest freed 400 MiB: %v; the host rss stays %s above the guest's use (margin %s)",
				last, mibs(last.HostRSS-last.GuestUsed), mibs(reclaimMargin))
		}
		time.Sleep(3 * time.Second)
	}
	t.Logf("freed, after %v: %v; host rss - guest used = %s (margin %s); host rss fell by %s",
		time.Since(freedAt).Round(time.Second), last, mibs(last.HostRSS-last.GuestUsed), mibs(reclaimMargin), mibs(full.HostRSS-last.HostRSS))
	if full.HostRSS-last.HostRSS < touched {
		t.Errorf("host rss fell by only %s after the guest freed 400 MiB", mibs(full.HostRSS-last.HostRSS))
	}
}
