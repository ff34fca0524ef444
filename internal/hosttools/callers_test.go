package hosttools

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestNoBareCalls keeps every host program banger runs going through this
// package: no exec.LookPath, and no exec.Command naming a tool of the
// table, in banger's host-side code. The guest agent (internal/guest)
// runs inside the guest and finds programs there; the few lookups of
// banger's own binaries are listed.
func TestNoBareCalls(t *testing.T) {
	// Lookups of banger's own binaries.
	allowedLookPath := []string{`exec.LookPath("banger")`, `exec.LookPath("bangerd")`, `exec.LookPath("banger-agent")`}
	var names []string
	for _, tool := range Tools() {
		names = append(names, regexp.QuoteMeta(tool.Name))
	}
	bareTool := regexp.MustCompile(`exec\.Command(Context)?\((ctx, |[a-zA-Z.()]+\.Context\(\), )?"(` + strings.Join(names, "|") + `)"`)
	root := filepath.Join("..", "..")
	checked := 0
	for _, top := range []string{"internal", "cmd"} {
		err := filepath.WalkDir(filepath.Join(root, top), func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			if d.IsDir() {
				if rel == filepath.Join("internal", "guest") || rel == filepath.Join("internal", "hosttools") {
					return filepath.SkipDir
				}
				return nil
			}
			if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			checked++
			for i, line := range strings.Split(string(b), "\n") {
				if strings.Contains(line, "exec.LookPath") && !strings.HasPrefix(strings.TrimSpace(line), "//") &&
					!slices.ContainsFunc(allowedLookPath, func(a string) bool { return strings.Contains(line, a) }) {
					t.Errorf("%s:%d: exec.LookPath: use hosttools.Path", rel, i+1)
				}
				if m := bareTool.FindString(line); m != "" {
					t.Errorf("%s:%d: %s: use hosttools", rel, i+1, m)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if checked < 50 {
		t.Fatalf("only %d files checked: wrong root?", checked)
	}
}
