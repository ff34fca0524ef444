package guest

import (
	"archive/tar"
	"encoding/json"
	"hash/adler32"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/gitpack"
)

func planJSON(t *testing.T, files ...string) string {
	t.Helper()
	var p gitpack.Plan
	for _, f := range files {
		p.Files = append(p.Files, gitpack.PlanFile{Path: f, Adler: adler32.Checksum([]byte(f))})
	}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A workspace stream that does not keep to its blob plan, or that tries
// to steer the laid-out pack out of the workspace with a symlink, fails;
// nothing is written outside the target, and no half-made pack is left.
func TestUntarWorkspaceRefusesBadStreams(t *testing.T) {
	reg := func(name string) tar.Header { return tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644} }
	// A valid-looking index (its content is the host's business; the
	// guest only reads the pack checksum from it).
	idx, err := gitpack.Index(nil, [20]byte{1})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		entries []tar.Header
		bodies  map[string]string
		want    string
	}{
		{"files out of plan order",
			[]tar.Header{reg(gitpack.PlanEntry), reg("b"), reg("a"), reg(gitpack.IndexEntry)},
			map[string]string{gitpack.PlanEntry: planJSON(t, "a", "b"), "a": "a", "b": "b", gitpack.IndexEntry: string(idx)},
			"ended its blob plan"},
		{"no index",
			[]tar.Header{reg(gitpack.PlanEntry), reg("a")},
			map[string]string{gitpack.PlanEntry: planJSON(t, "a"), "a": "a"},
			"without its pack index"},
		{"index without plan",
			[]tar.Header{reg("a"), reg(gitpack.IndexEntry)},
			map[string]string{"a": "a", gitpack.IndexEntry: string(idx)},
			"without a blob plan"},
		{"plan not first",
			[]tar.Header{reg("a"), reg(gitpack.PlanEntry)},
			map[string]string{"a": "a", gitpack.PlanEntry: planJSON(t)},
			"out of place"},
		{"bad index",
			[]tar.Header{reg(gitpack.PlanEntry), reg(gitpack.IndexEntry)},
			map[string]string{gitpack.PlanEntry: planJSON(t), gitpack.IndexEntry: "not an index"},
			"pack index"},
		{".git replaced by a symlink out",
			[]tar.Header{reg(gitpack.PlanEntry), {Name: ".git", Typeflag: tar.TypeSymlink, Linkname: "OUTSIDE"}, reg(gitpack.IndexEntry)},
			map[string]string{gitpack.PlanEntry: planJSON(t), gitpack.IndexEntry: string(idx)},
			"workspace pack"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			outside := filepath.Join(base, "outside")
			os.MkdirAll(filepath.Join(outside, "objects/pack"), 0o755)
			for i := range tc.entries {
				if tc.entries[i].Linkname == "OUTSIDE" {
					tc.entries[i].Linkname = outside
				}
			}
			dir := filepath.Join(base, "repo")
			_, err := UntarWorkspace(makeTar(t, tc.entries, tc.bodies), dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one about %q", err, tc.want)
			}
			if ents, _ := os.ReadDir(filepath.Join(outside, "objects/pack")); len(ents) != 0 {
				t.Errorf("written outside the workspace: %v", ents)
			}
			if ents, _ := os.ReadDir(filepath.Join(dir, ".git/objects/pack")); len(ents) != 0 {
				t.Errorf("left in the workspace's pack directory: %v", ents)
			}
		})
	}
}
