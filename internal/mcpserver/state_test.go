package mcpserver

import (
	"os"
	"path/filepath"
	"testing"
)

func TestStateAddRemove(t *testing.T) {
	st := State{Path: filepath.Join(t.TempDir(), "mcp", "sandboxes.json")}
	if recs, err := st.List(); err != nil || len(recs) != 0 {
		t.Fatalf("missing file: %v %v", recs, err)
	}
	st.Add(Record{Name: "mcp-a", ID: "1"})
	st.Add(Record{Name: "mcp-b", ID: "2"})
	if err := st.Remove("1"); err != nil {
		t.Fatal(err)
	}
	recs, err := st.List()
	if err != nil || len(recs) != 1 || recs[0].Name != "mcp-b" {
		t.Fatalf("got %v %v", recs, err)
	}
	if fi, _ := os.Stat(st.Path); fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v", fi.Mode())
	}
}

func TestStateRefusesHostileFile(t *testing.T) {
	dir := t.TempDir()
	big := State{Path: filepath.Join(dir, "big.json")}
	os.WriteFile(big.Path, make([]byte, maxStateFile+10), 0o600)
	if _, err := big.List(); err == nil {
		t.Error("over-long state file accepted")
	}
	bad := State{Path: filepath.Join(dir, "bad.json")}
	os.WriteFile(bad.Path, []byte("{not json"), 0o600)
	if err := bad.Add(Record{Name: "x"}); err == nil {
		t.Error("corrupt state file overwritten silently")
	}
}
