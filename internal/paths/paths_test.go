package paths

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"banger/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// noMetadata is an install metadata file that does not exist: the
// machine's own /etc/banger/install.json must not decide a test.
func noMetadata(t *testing.T) string { return filepath.Join(t.TempDir(), "install.json") }

func TestFromEnvXDG(t *testing.T) {
	testenv.Isolate(t)
	t.Setenv("XDG_STATE_HOME", "/s")
	t.Setenv("XDG_CONFIG_HOME", "/c")
	t.Setenv("XDG_RUNTIME_DIR", "/r")
	t.Setenv("BANGER_RUNTIME_DIR", "")
	l, err := fromEnv(noMetadata(t))
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

// Without the XDG variables the layout is under HOME.
func TestFromEnvHome(t *testing.T) {
	d := testenv.Isolate(t)
	t.Setenv("XDG_STATE_HOME", "")
	t.Setenv("XDG_CONFIG_HOME", "")
	l, err := fromEnv(noMetadata(t))
	if err != nil {
		t.Fatal(err)
	}
	if l.State != filepath.Join(d.Home, ".local/state/banger") || l.Config != filepath.Join(d.Home, ".config/banger") {
		t.Errorf("layout %+v, want under %s", l, d.Home)
	}
	t.Setenv("XDG_STATE_HOME", "relative")
	if _, err := fromEnv(noMetadata(t)); err == nil {
		t.Error("relative XDG_STATE_HOME accepted")
	}
}

func TestFromEnvServiceRuntimeDir(t *testing.T) {
	testenv.Isolate(t)
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

// The installed service's runtime directory wins over XDG_RUNTIME_DIR
// for its owner.
func TestFromEnvInstalledService(t *testing.T) {
	testenv.Isolate(t)
	t.Setenv("BANGER_RUNTIME_DIR", "")
	t.Setenv("XDG_RUNTIME_DIR", "/r")
	f := noMetadata(t)
	os.WriteFile(f, []byte(fmt.Sprintf(`{"owner":"alice","uid":%d,"runtime_dir":"/run/bangerd"}`, os.Getuid())), 0o644)
	if l, err := fromEnv(f); err != nil || l.Runtime != "/run/bangerd" {
		t.Errorf("runtime %+v %v, want the service's", l, err)
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
