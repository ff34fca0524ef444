package paths

import (
	"os"
	"path/filepath"
	"testing"
)

func TestFromEnvXDG(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", "/s")
	t.Setenv("XDG_CONFIG_HOME", "/c")
	t.Setenv("XDG_RUNTIME_DIR", "/r")
	t.Setenv("BANGER_RUNTIME_DIR", "")
	l, err := FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if l.State != "/s/banger" || l.Config != "/c/banger" || l.Runtime != "/r/banger" {
		t.Errorf("layout %+v", l)
	}
	if l.Socket() != "/r/banger/bangerd.sock" {
		t.Errorf("socket %s", l.Socket())
	}
}

func TestFromEnvServiceRuntimeDir(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", "/s")
	t.Setenv("XDG_CONFIG_HOME", "/c")
	t.Setenv("BANGER_RUNTIME_DIR", "/run/bangerd")
	l, err := FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if l.Runtime != "/run/bangerd" {
		t.Errorf("runtime %s", l.Runtime)
	}
	t.Setenv("BANGER_RUNTIME_DIR", "relative")
	if _, err := FromEnv(); err == nil {
		t.Error("relative BANGER_RUNTIME_DIR accepted")
	}
}

func TestInstalledRuntimeDir(t *testing.T) {
	f := filepath.Join(t.TempDir(), "install.json")
	if got := installedRuntimeDir(f, 1000); got != "" {
		t.Errorf("no metadata: %q", got)
	}
	os.WriteFile(f, []byte(`{"owner":"alice","uid":1000,"runtime_dir":"/run/bangerd"}`), 0o644)
	if got := installedRuntimeDir(f, 1000); got != "/run/bangerd" {
		t.Errorf("owner: %q", got)
	}
	if got := installedRuntimeDir(f, 1001); got != "" {
		t.Errorf("another user must not use the owner's daemon: %q", got)
	}
	os.WriteFile(f, []byte(`{"uid":1000,"runtime_dir":"run"}`), 0o644)
	if got := installedRuntimeDir(f, 1000); got != "" {
		t.Errorf("relative dir accepted: %q", got)
	}
}
