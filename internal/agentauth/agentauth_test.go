package agentauth

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// fakeHome makes a temporary home and points the environment at it.
func fakeHome(t *testing.T) string {
	t.Helper()
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_DATA_HOME", "")
	t.Setenv("XDG_CONFIG_HOME", "")
	t.Setenv("CODEX_HOME", "")
	t.Setenv("CLAUDE_CONFIG_DIR", "")
	return home
}

func write(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func files(t *testing.T, names ...string) (map[string]string, error) {
	t.Helper()
	env, err := FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	fs, err := env.Files(names)
	if err != nil {
		return nil, err
	}
	got := map[string]string{}
	for _, f := range fs {
		got[f.Path] = string(f.Data)
	}
	return got, nil
}

func TestAllThree(t *testing.T) {
	home := fakeHome(t)
	write(t, filepath.Join(home, ".claude/.credentials.json"), `{"claudeAiOauth":{}}`)
	write(t, filepath.Join(home, ".claude.json"), `{"hasCompletedOnboarding":true}`)
	write(t, filepath.Join(home, ".codex/auth.json"), `{"OPENAI_API_KEY":null}`)
	write(t, filepath.Join(home, ".local/share/opencode/auth.json"), `{"anthropic":{}}`)
	got, err := files(t, "claude", "codex", "opencode")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"/root/.claude/.credentials.json":       `{"claudeAiOauth":{}}`,
		"/root/.claude.json":                    `{"hasCompletedOnboarding":true}`,
		"/root/.codex/auth.json":                `{"OPENAI_API_KEY":null}`,
		"/root/.local/share/opencode/auth.json": `{"anthropic":{}}`,
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

func TestOptionalClaudeStateAndEnvDirs(t *testing.T) {
	home := fakeHome(t)
	other := t.TempDir()
	t.Setenv("CODEX_HOME", filepath.Join(other, "codex"))
	t.Setenv("XDG_DATA_HOME", filepath.Join(home, "data"))
	write(t, filepath.Join(home, ".claude/.credentials.json"), "c")
	write(t, filepath.Join(other, "codex/auth.json"), "x")
	write(t, filepath.Join(home, "data/opencode/auth.json"), "o")
	got, err := files(t, "claude", "codex", "opencode")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got["/root/.claude/.credentials.json"] != "c" ||
		got["/root/.codex/auth.json"] != "x" || got["/root/.local/share/opencode/auth.json"] != "o" {
		t.Fatalf("got %v", got)
	}
}

func TestMissingNamesThePath(t *testing.T) {
	home := fakeHome(t)
	_, err := files(t, "codex")
	if err == nil || !strings.Contains(err.Error(), filepath.Join(home, ".codex/auth.json")) {
		t.Fatalf("err = %v, want one naming the path", err)
	}
	// ~/.claude.json alone is not a login.
	write(t, filepath.Join(home, ".claude.json"), "{}")
	_, err = files(t, "claude")
	if err == nil || !strings.Contains(err.Error(), ".credentials.json") {
		t.Fatalf("err = %v", err)
	}
}

func TestBadNames(t *testing.T) {
	fakeHome(t)
	for _, names := range [][]string{{"gemini"}, {"codex", "codex"}, {""}} {
		if _, err := files(t, names...); err == nil {
			t.Errorf("%q accepted", names)
		}
	}
}

func TestHostile(t *testing.T) {
	cases := map[string]func(t *testing.T, p string){
		"symlink to /etc/shadow": func(t *testing.T, p string) {
			os.MkdirAll(filepath.Dir(p), 0o700)
			if err := os.Symlink("/etc/shadow", p); err != nil {
				t.Fatal(err)
			}
		},
		"relative symlink out of home": func(t *testing.T, p string) {
			os.MkdirAll(filepath.Dir(p), 0o700)
			outside := filepath.Join(t.TempDir(), "secret")
			os.WriteFile(outside, []byte("s"), 0o600)
			rel, _ := filepath.Rel(filepath.Dir(p), outside)
			if err := os.Symlink(rel, p); err != nil {
				t.Fatal(err)
			}
		},
		"huge file": func(t *testing.T, p string) {
			os.MkdirAll(filepath.Dir(p), 0o700)
			f, err := os.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			f.Truncate(1 << 30) // sparse
			f.Close()
		},
		"directory": func(t *testing.T, p string) {
			if err := os.MkdirAll(p, 0o700); err != nil {
				t.Fatal(err)
			}
		},
		"fifo": func(t *testing.T, p string) {
			os.MkdirAll(filepath.Dir(p), 0o700)
			if err := syscall.Mkfifo(p, 0o600); err != nil {
				t.Fatal(err)
			}
		},
	}
	for name, plant := range cases {
		t.Run(name, func(t *testing.T) {
			home := fakeHome(t)
			p := filepath.Join(home, ".codex/auth.json")
			plant(t, p)
			got, err := files(t, "codex")
			if err == nil {
				t.Fatalf("accepted: %v", got)
			}
			if !strings.Contains(err.Error(), p) {
				t.Errorf("error %q does not name %s", err, p)
			}
		})
	}
}

func TestSymlinkInsideHomeIsFollowed(t *testing.T) {
	home := fakeHome(t)
	write(t, filepath.Join(home, "dotfiles/codex-auth.json"), "x")
	os.MkdirAll(filepath.Join(home, ".codex"), 0o700)
	if err := os.Symlink("../dotfiles/codex-auth.json", filepath.Join(home, ".codex/auth.json")); err != nil {
		t.Fatal(err)
	}
	got, err := files(t, "codex")
	if err != nil || got["/root/.codex/auth.json"] != "x" {
		t.Fatalf("got %v, %v", got, err)
	}
}

func TestWarningPointsAtSecrets(t *testing.T) {
	w := Warning([]string{"claude"})
	if !strings.Contains(w, "banger secret (see README)") || !strings.Contains(w, "claude") {
		t.Fatalf("warning %q", w)
	}
}
