package doctor

import (
	"context"
	"path/filepath"
	"testing"

	"banger/internal/paths"
)

func find(cs []Check, name string) Check {
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	return Check{}
}

// A fresh install has no store yet: that is fine, but without kernels and
// images nothing can boot, and the report must fail and say how to fix it.
func TestFreshInstall(t *testing.T) {
	dir := t.TempDir()
	l := paths.Layout{State: filepath.Join(dir, "state"), Config: filepath.Join(dir, "config"), Runtime: filepath.Join(dir, "run")}
	t.Setenv("BANGER_ACCEL", "tcg")
	cs := Run(context.Background(), l)
	if c := find(cs, "store"); c.Status != Pass {
		t.Errorf("missing store should pass on a fresh install: %+v", c)
	}
	if c := find(cs, "state dir"); c.Status != Pass {
		t.Errorf("state dir: %+v", c)
	}
	if c := find(cs, "accel"); c.Status != Pass {
		t.Errorf("accel forced to tcg: %+v", c)
	}
	for _, n := range []string{"kernels", "images"} {
		if c := find(cs, n); c.Status != Fail || c.Fix == "" {
			t.Errorf("%s: want FAIL with a fix, got %+v", n, c)
		}
	}
	if !Failed(cs) {
		t.Errorf("report with FAILs must fail")
	}
}
