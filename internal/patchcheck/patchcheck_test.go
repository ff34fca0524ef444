package patchcheck

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// gitPatch builds a repository, lets change edit its work tree and returns
// `git diff --cached --binary --full-index` of the result, as the export
// script produces it.
func gitPatch(t *testing.T, setup, change func(dir string), extra ...string) []byte {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	dir := t.TempDir()
	t.Setenv("HOME", dir)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, ".config"))
	t.Setenv("GIT_CONFIG_NOSYSTEM", "1")
	git := func(args ...string) []byte {
		cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@t", "-c", "core.quotepath=true"}, args...)...)
		cmd.Dir = dir
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("git %v: %v", args, err)
		}
		return out
	}
	git("init", "-q")
	setup(dir)
	git("add", "-A")
	git("commit", "-q", "--allow-empty", "-m", "base")
	change(dir)
	git("add", "-A")
	return git(append([]string{"diff", "--cached", "--binary", "--full-index", "--src-prefix=a/", "--dst-prefix=b/"}, append(extra, "HEAD")...)...)
}

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestAcceptsRealPatches(t *testing.T) {
	base := func(dir string) {
		write(t, dir, "README", "hello\nworld\n")
		write(t, dir, "src/main.go", "package main\n")
		write(t, dir, "old name.txt", strings.Repeat("same line\n", 20))
		write(t, dir, "bin.dat", "\x00\x01\x02binary")
		write(t, dir, "gone.txt", "bye\n")
		os.Symlink("README", filepath.Join(dir, "link"))
	}
	cases := map[string]struct {
		change func(dir string)
		extra  []string
	}{
		"edits": {change: func(dir string) {
			write(t, dir, "README", "hello\nthere\nworld")
			write(t, dir, "src/new file.go", "package main\n// new\n")
			write(t, dir, "empty", "")
			write(t, dir, "tab\tand \"quote\".txt", "x\n")
			write(t, dir, "ünïcode.txt", "x\n")
			os.Remove(filepath.Join(dir, "gone.txt"))
			os.Chmod(filepath.Join(dir, "src/main.go"), 0o755)
		}},
		"binary": {change: func(dir string) {
			write(t, dir, "bin.dat", "\x00\x01\x02binary changed"+strings.Repeat("\xff", 300))
			write(t, dir, "new.bin", "\x00\x00\x00")
		}},
		"symlinks": {change: func(dir string) {
			os.Symlink("../README", filepath.Join(dir, "src/up"))
			os.Symlink("src/main.go", filepath.Join(dir, "to main"))
			os.Remove(filepath.Join(dir, "link"))
			os.Symlink("src", filepath.Join(dir, "link"))
		}},
		"symlink retargeted": {change: func(dir string) {
			os.Remove(filepath.Join(dir, "link"))
			os.Symlink("src/main.go", filepath.Join(dir, "link"))
		}, extra: []string{"--no-renames"}},
		"type changes": {change: func(dir string) {
			os.Remove(filepath.Join(dir, "link"))
			write(t, dir, "link", "now a file\n")
			os.Remove(filepath.Join(dir, "gone.txt"))
			os.Symlink("README", filepath.Join(dir, "gone.txt"))
		}, extra: []string{"--no-renames"}},
		"mode and content change": {change: func(dir string) {
			write(t, dir, "src/main.go", "package main\n\nfunc main() {}\n")
			os.Chmod(filepath.Join(dir, "src/main.go"), 0o755)
			os.Chmod(filepath.Join(dir, "bin.dat"), 0o755)
		}, extra: []string{"--no-renames"}},
		"renames": {change: func(dir string) {
			os.Rename(filepath.Join(dir, "old name.txt"), filepath.Join(dir, "new name.txt"))
			write(t, dir, "src/copy.go", "package main\n")
			os.Rename(filepath.Join(dir, "README"), filepath.Join(dir, "docs/README"))
		}, extra: []string{"-M", "--no-renames"}},
		"renames with similarity": {change: func(dir string) {
			os.MkdirAll(filepath.Join(dir, "docs"), 0o755)
			os.Rename(filepath.Join(dir, "old name.txt"), filepath.Join(dir, "docs/new name.txt"))
			f, _ := os.OpenFile(filepath.Join(dir, "docs/new name.txt"), os.O_APPEND|os.O_WRONLY, 0)
			f.WriteString("one more\n")
			f.Close()
		}, extra: []string{"-M"}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			patch := gitPatch(t, base, c.change, c.extra...)
			if len(patch) == 0 {
				t.Fatal("empty patch")
			}
			sum, err := Check(bytes.NewReader(patch))
			if err != nil {
				t.Fatalf("refused a real patch: %v\n%s", err, patch)
			}
			if sum.Files == 0 {
				t.Errorf("no files counted")
			}
		})
	}
	if _, err := Check(strings.NewReader("")); err != nil {
		t.Errorf("empty patch: %v", err)
	}
}

// A pure rename (100% similar) carries no mode: it could be a symlink
// moved to where its relative target escapes, so it is refused.
func TestRefusesPureRename(t *testing.T) {
	patch := gitPatch(t, func(dir string) {
		os.MkdirAll(filepath.Join(dir, "a/b"), 0o755)
		os.Symlink("../x", filepath.Join(dir, "a/b/link"))
	}, func(dir string) {
		os.Rename(filepath.Join(dir, "a/b/link"), filepath.Join(dir, "link"))
	}, "-M")
	_, err := Check(bytes.NewReader(patch))
	var pe *Error
	if !errors.As(err, &pe) || !strings.Contains(pe.Reason, "cannot rule out a symlink") {
		t.Fatalf("pure rename: %v\n%s", err, patch)
	}
}

const symlinkNew = `diff --git a/%s b/%s
new file mode 120000
index 0000000000000000000000000000000000000000..1111111111111111111111111111111111111111
--- /dev/null
+++ b/%s
@@ -0,0 +1 @@
+%s
\ No newline at end of file
`

func TestRefusesHostilePatches(t *testing.T) {
	sl := func(link, target string) string {
		s := symlinkNew
		for _, v := range []string{link, link, link, target} {
			s = strings.Replace(s, "%s", v, 1)
		}
		return s
	}
	text := func(name string) string {
		return "diff --git a/" + name + " b/" + name + "\nindex 1111111..2222222 100644\n--- a/" + name + "\n+++ b/" + name + "\n@@ -1 +1 @@\n-a\n+b\n"
	}
	cases := []struct {
		name, patch, path, reason string
	}{
		{"dotdot in diff header", text("../outside"), "../outside", "leaves the repository"},
		{"dotdot deep", text("src/../../outside"), "src/../../outside", "leaves the repository"},
		{"absolute via empty component", "diff --git a//etc/passwd b//etc/passwd\nindex 1111111..2222222 100644\n--- a//etc/passwd\n+++ b//etc/passwd\n@@ -1 +1 @@\n-a\n+b\n", "/etc/passwd", "absolute"},
		{"git dir", text(".git/hooks/pre-commit"), ".git/hooks/pre-commit", "inside .git"},
		{"git dir case", text("sub/.GIT/config"), "sub/.GIT/config", "inside .git"},
		{"dotdot only in +++", "diff --git a/x b/x\nindex 1111111..2222222 100644\n--- a/x\n+++ b/../x\n@@ -1 +1 @@\n-a\n+b\n", "../x", "leaves the repository"},
		{"quoted octal dotdot", "diff --git \"a/\\056\\056/x\" \"b/\\056\\056/x\"\nindex 1111111..2222222 100644\n--- \"a/\\056\\056/x\"\n+++ \"b/\\056\\056/x\"\n@@ -1 +1 @@\n-a\n+b\n", "../x", "leaves the repository"},
		{"rename to outside", "diff --git a/x b/y\nsimilarity index 90%\nrename from x\nrename to ../../y\nindex 1111111..2222222 100644\n--- a/x\n+++ b/y\n@@ -1 +1 @@\n-a\n+b\n", "../../y", "leaves the repository"},
		{"copy into git", "diff --git a/x b/.git/config\nsimilarity index 100%\ncopy from x\ncopy to .git/config\n", ".git/config", "inside .git"},
		{"absolute symlink", sl("evil", "/etc/shadow"), "evil", "absolute"},
		{"escaping symlink", sl("a/b/evil", "../../../etc"), "a/b/evil", "points outside"},
		{"symlink to parent", sl("evil", ".."), "evil", "points outside"},
		{"symlink into git", sl("hooks", ".git/hooks"), "hooks", "points into .git"},
		{"symlink with newline target", "diff --git a/l b/l\nnew file mode 120000\nindex 0000000..1111111\n--- /dev/null\n+++ b/l\n@@ -0,0 +1,2 @@\n+ok\n+/etc\n\\ No newline at end of file\n", "l", "control characters"},
		{"mode change to symlink", "diff --git a/f b/f\nold mode 100644\nnew mode 120000\n", "f", "not in the patch"},
		{"modified symlink escapes", "diff --git a/l b/l\nindex 1111111..2222222 120000\n--- a/l\n+++ b/l\n@@ -1 +1 @@\n-README\n\\ No newline at end of file\n+../../etc/passwd\n\\ No newline at end of file\n", "l", "points outside"},
		{"binary symlink", "diff --git a/l b/l\nnew file mode 120000\nindex 0000000..1111111\nGIT binary patch\nliteral 4\nLcmZ?wOiuy;1E2u_\n\nliteral 0\nHcmV?d00001\n\n", "l", "binary"},
		{"modified symlink without mode", "diff --git a/CLAUDE.md b/CLAUDE.md\n--- a/CLAUDE.md\n+++ b/CLAUDE.md\n@@ -1 +1 @@\n-AGENTS.md\n\\ No newline at end of file\n+/etc/passwd\n\\ No newline at end of file\n", "CLAUDE.md", "does not give the file's mode"},
		{"index mode without mode", "diff --git a/x b/x\nindex 1111111..2222222\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n", "x", "does not give the file's mode"},
		{"old mode only", "diff --git a/x b/x\nold mode 120000\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+/etc\n\\ No newline at end of file\n", "x", "points outside"},
		{"index mode overridden by old mode", "diff --git a/l b/l\nindex 1111111..2222222 100644\nold mode 120000\n--- a/l\n+++ b/l\n@@ -1 +1 @@\n-a\n+/etc\n\\ No newline at end of file\n", "l", "more than one header line gives the same mode"},
		{"two new modes", "diff --git a/l b/l\nnew mode 100644\nnew mode 120000\n", "l", "more than one header line gives the same mode"},
		{"two index lines", "diff --git a/l b/l\nindex 1111111..2222222\nindex 1111111..2222222 100644\n", "l", "more than one index line"},
		{"deleted and new", "diff --git a/l b/l\ndeleted file mode 100644\nnew file mode 120000\n", "l", "both deletes and creates"},
		{"chained symlink", sl("a/x", "..") + sl("a/y", "x/.."), "a/y", "after a name"},
		{"dot after name", sl("a/y", "x/./../.."), "a/y", "after a name"},
		{"dotdot after name deep", sl("l", "src/../../etc"), "l", "after a name"},
		{"trailing slash", sl("l", "src/"), "l", "empty component"},
		{"double slash", sl("l", "..//x"), "l", "empty component"},
		{"pure rename unknown mode", "diff --git a/l b/m\nsimilarity index 100%\nrename from l\nrename to m\n", "m", "cannot rule out"},
		{"garbage before", "hello\n" + text("x"), "", "expected a \"diff --git\""},
		{"garbage in header", "diff --git a/x b/x\nrm -rf /\n", "", "unexpected line"},
		{"traditional diff after", text("x") + "--- a/../y\n+++ b/../y\n@@ -1 +1 @@\n-a\n+b\n", "", "expected a hunk header"},
		{"hunk too long", "diff --git a/x b/x\nindex 1111111..2222222 100644\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n+c\n", "", "expected a hunk header"},
		{"hunk cut short", "diff --git a/x b/x\nindex 1111111..2222222 100644\n--- a/x\n+++ b/x\n@@ -1,3 +1,3 @@\n-a\n+b\n", "", "ends inside a hunk"},
		{"binary without data", "diff --git a/x b/x\nindex 1111111..2222222 100644\nBinary files a/x and b/x differ\n", "x", "without its data"},
		{"bad binary line", "diff --git a/x b/x\nindex 1111111..2222222 100644\nGIT binary patch\nliteral 4\n../../etc\n\n", "", "bad binary data"},
		{"odd mode", "diff --git a/x b/x\nold mode 100644\nnew mode 104755\n", "", "unsupported file mode"},
		{"no newline at end", strings.TrimSuffix(text("x"), "\n"), "", "no newline"},
		{"raw control char in name", text("x\x1b[2Jy"), "", "control characters"},
		{"quoted NUL in name", "diff --git \"a/x\\000y\" \"b/x\\000y\"\nnew file mode 100644\nindex 0000000..e69de29\n", "x\x00y", "NUL"},
		{"no prefix", "diff --git x x\nindex 1111111..2222222 100644\n--- x\n+++ x\n@@ -1 +1 @@\n-a\n+b\n", "x", "no a/ or b/ prefix"},
		{"huge header line", "diff --git a/" + strings.Repeat("x", 70<<10) + " b/x\n", "", "header line over"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Check(strings.NewReader(c.patch))
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("accepted (or odd error %v):\n%s", err, c.patch)
			}
			if !strings.Contains(pe.Reason, c.reason) || (c.path != "" && pe.Path != c.path) {
				t.Errorf("refused for the wrong reason: %v (want path %q, reason containing %q)", err, c.path, c.reason)
			}
		})
	}
}

// An inside symlink written by hand, and one whose target has a trailing
// newline, are fine.
func TestAcceptsInsideSymlinks(t *testing.T) {
	for _, p := range []string{
		"diff --git a/a/l b/a/l\nnew file mode 120000\nindex 0000000..1111111\n--- /dev/null\n+++ b/a/l\n@@ -0,0 +1 @@\n+../README\n\\ No newline at end of file\n",
		"diff --git a/l b/l\nnew file mode 120000\nindex 0000000..1111111\n--- /dev/null\n+++ b/l\n@@ -0,0 +1 @@\n+src/x\n\\ No newline at end of file\n",
		"diff --git a/a/b/l b/a/b/l\nnew file mode 120000\nindex 0000000..1111111\n--- /dev/null\n+++ b/a/b/l\n@@ -0,0 +1 @@\n+./../../c/d\n\\ No newline at end of file\n",
		"diff --git a/l b/l\nnew file mode 120000\nindex 0000000..1111111\n--- /dev/null\n+++ b/l\n@@ -0,0 +1 @@\n+.\n\\ No newline at end of file\n",
	} {
		if _, err := Check(strings.NewReader(p)); err != nil {
			t.Errorf("%v\n%s", err, p)
		}
	}
}

// Content lines are not kept: a patch with a huge line is checked in
// bounded memory.
func TestHugeContentLine(t *testing.T) {
	huge := strings.Repeat("x", 8<<20)
	p := "diff --git a/x b/x\nindex 1111111..2222222 100644\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+" + huge + "\n"
	if _, err := Check(strings.NewReader(p)); err != nil {
		t.Fatal(err)
	}
}

// The two bypasses a security review demonstrated: git apply takes both
// patches (checked here so the test cannot go stale), the checker must
// not.
func TestRefusesDemonstratedExploits(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	cases := []struct {
		name, patch, path, reason string
	}{
		{"existing symlink modified without a mode",
			"diff --git a/CLAUDE.md b/CLAUDE.md\n--- a/CLAUDE.md\n+++ b/CLAUDE.md\n@@ -1 +1 @@\n-AGENTS.md\n\\ No newline at end of file\n+/etc/passwd\n\\ No newline at end of file\n",
			"CLAUDE.md", "does not give the file's mode"},
		{"index mode then old mode",
			"diff --git a/CLAUDE.md b/CLAUDE.md\nindex 1111111..2222222 100644\nold mode 120000\n--- a/CLAUDE.md\n+++ b/CLAUDE.md\n@@ -1 +1 @@\n-AGENTS.md\n\\ No newline at end of file\n+/etc/passwd\n\\ No newline at end of file\n",
			"CLAUDE.md", "more than one header line"},
		{"chained symlinks",
			"diff --git a/a/x b/a/x\nnew file mode 120000\nindex 0000000..1111111\n--- /dev/null\n+++ b/a/x\n@@ -0,0 +1 @@\n+..\n\\ No newline at end of file\n" +
				"diff --git a/a/y b/a/y\nnew file mode 120000\nindex 0000000..1111111\n--- /dev/null\n+++ b/a/y\n@@ -0,0 +1 @@\n+x/..\n\\ No newline at end of file\n",
			"a/y", "after a name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			t.Setenv("HOME", dir)
			t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, ".config"))
			t.Setenv("GIT_CONFIG_NOSYSTEM", "1")
			repo := filepath.Join(dir, "repo")
			write(t, repo, "AGENTS.md", "rules\n")
			write(t, repo, "a/f", "x\n")
			if err := os.Symlink("AGENTS.md", filepath.Join(repo, "CLAUDE.md")); err != nil {
				t.Fatal(err)
			}
			write(t, dir, "p.diff", c.patch)
			for _, args := range [][]string{{"init", "-q"}, {"add", "-A"}, {"apply", "--check", "../p.diff"}} {
				cmd := exec.Command("git", args...)
				cmd.Dir = repo
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("git %v: %v\n%s", args, err, out)
				}
			}
			_, err := Check(strings.NewReader(c.patch))
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("accepted (or odd error %v):\n%s", err, c.patch)
			}
			if pe.Path != c.path || !strings.Contains(pe.Reason, c.reason) {
				t.Errorf("refused for the wrong reason: %v (want path %q, reason containing %q)", err, c.path, c.reason)
			}
		})
	}
}
