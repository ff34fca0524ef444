package paths

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/testreq"
)

// nobody is the uid of the "other local user" in these tests.
const nobody = 65534

func TestEnsureRuntimeCreatesPrivateDirs(t *testing.T) {
	base := t.TempDir()
	l := Layout{RuntimeParent: filepath.Join(base, "banger-1000"), Runtime: filepath.Join(base, "banger-1000", "banger")}
	if err := l.CheckRuntime(); err != nil {
		t.Fatalf("missing directories: %v", err)
	}
	if err := l.EnsureRuntime(); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{l.RuntimeParent, l.Runtime} {
		fi, err := os.Lstat(d)
		if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v %v, want a 0700 directory", d, fi.Mode(), err)
		}
	}
	if err := l.EnsureRuntime(); err != nil {
		t.Fatalf("second call: %v", err)
	}
}

// TestRuntimeDirOfAnotherUser: uid 65534 made the /tmp fallback (or the
// runtime directory itself) first; banger refuses it.
func TestRuntimeDirOfAnotherUser(t *testing.T) {
	testreq.Require(t, os.Geteuid() == 0, "needs root to make a directory owned by another user (uid 65534)")
	for _, which := range []string{"parent", "runtime"} {
		t.Run(which, func(t *testing.T) {
			base := t.TempDir()
			l := Layout{RuntimeParent: filepath.Join(base, "banger-0"), Runtime: filepath.Join(base, "banger-0", "banger")}
			if err := os.MkdirAll(l.Runtime, 0o700); err != nil {
				t.Fatal(err)
			}
			victim := l.Runtime
			if which == "parent" {
				victim = l.RuntimeParent
			}
			if err := os.Chown(victim, nobody, nobody); err != nil {
				t.Fatal(err)
			}
			for name, f := range map[string]func() error{"EnsureRuntime": l.EnsureRuntime, "CheckRuntime": l.CheckRuntime} {
				err := f()
				if err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
					t.Errorf("%s: err = %v, want a refusal naming uid 65534", name, err)
				}
			}
			if ents, _ := os.ReadDir(l.Runtime); len(ents) != 0 {
				t.Errorf("something was created in the hostile directory: %v", ents)
			}
		})
	}
}

func TestRuntimeDirRefusesOpenModesAndSymlinks(t *testing.T) {
	base := t.TempDir()
	open := filepath.Join(base, "open")
	if err := os.Mkdir(open, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	err := Layout{Runtime: open}.EnsureRuntime()
	if err == nil || !strings.Contains(err.Error(), "mode 0777") {
		t.Errorf("world-writable: err = %v", err)
	}
	if err := os.Chmod(open, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := (Layout{Runtime: open}).EnsureRuntime(); err == nil {
		t.Error("group-accessible directory accepted")
	}
	// The service manager's directory may be readable (0755), not writable.
	if err := os.Chmod(open, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := (Layout{Runtime: open, RuntimeManaged: true}).EnsureRuntime(); err != nil {
		t.Errorf("managed 0755: %v", err)
	}
	if err := os.Chmod(open, 0o775); err != nil {
		t.Fatal(err)
	}
	if err := (Layout{Runtime: open, RuntimeManaged: true}).EnsureRuntime(); err == nil {
		t.Error("managed group-writable directory accepted")
	}

	// A symbolic link planted where the directory should be.
	target := filepath.Join(base, "target")
	os.Mkdir(target, 0o700)
	link := filepath.Join(base, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	err = Layout{Runtime: link}.EnsureRuntime()
	if err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("symlink: err = %v", err)
	}
}

func TestFromEnvFallbackIsChecked(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", "/s")
	t.Setenv("XDG_CONFIG_HOME", "/c")
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("BANGER_RUNTIME_DIR", "")
	_, err := os.Stat(InstallMetadataFile)
	testreq.Require(t, err != nil, "an installed service's metadata ("+InstallMetadataFile+") decides the runtime directory here")
	l, err := FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(l.Runtime, "/tmp/") && l.RuntimeParent == "" {
		t.Errorf("fallback %s without RuntimeParent", l.Runtime)
	}
}
