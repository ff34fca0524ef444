package sysinstall

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeUsers is a user database: alice (and whoever else a test adds).
type fakeUsers struct {
	users  map[string]Account
	groups map[string]bool
}

func (f *fakeUsers) LookupUser(name string) (Account, error) {
	for _, a := range f.users {
		if a.Name == name || fmt.Sprint(a.UID) == name {
			return a, nil
		}
	}
	return Account{}, fmt.Errorf("%w: %s", ErrUnknownUser, name)
}

func (f *fakeUsers) HasGroup(name string) (bool, error) { return f.groups[name], nil }

// fakeSystemctl records commands and fails the ones fail says to.
type fakeSystemctl struct {
	mu     sync.Mutex
	calls  [][]string
	fail   func(args []string) error
	output func(args []string) ([]byte, error)
}

func (f *fakeSystemctl) Run(ctx context.Context, args ...string) error {
	_, err := f.Output(ctx, args...)
	return err
}

func (f *fakeSystemctl) Output(ctx context.Context, args ...string) ([]byte, error) {
	f.mu.Lock()
	f.calls = append(f.calls, slices.Clone(args))
	f.mu.Unlock()
	if f.fail != nil {
		if err := f.fail(args); err != nil {
			return nil, err
		}
	}
	if f.output != nil {
		return f.output(args)
	}
	return nil, nil
}

func (f *fakeSystemctl) commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		out = append(out, strings.Join(c, " "))
	}
	return out
}

// ownerIDs are alice's uid and gid: ones the test may chown to.
func ownerIDs() (int, int) {
	if os.Geteuid() == 0 {
		return 1000, 1000
	}
	return os.Getuid(), os.Getgid()
}

// env is a test machine: a root with alice's home, a source dir with the
// four binaries, and options pointing at both.
type env struct {
	root, src string
	alice     Account
	users     *fakeUsers
	sc        *fakeSystemctl
	opts      Options
}

func newEnv(t *testing.T) *env {
	t.Helper()
	uid, gid := ownerIDs()
	e := &env{root: t.TempDir(), src: t.TempDir(), sc: &fakeSystemctl{}}
	e.alice = Account{Name: "alice", UID: uid, GID: gid, Group: "alice", Home: "/home/alice"}
	e.users = &fakeUsers{users: map[string]Account{"alice": e.alice}, groups: map[string]bool{"kvm": true}}
	mkdir(t, filepath.Join(e.root, "home/alice"))
	for _, b := range binaries() {
		write(t, filepath.Join(e.src, b), "#!/bin/sh\necho "+b+"\n", 0o755)
	}
	e.opts = Options{
		Root:      e.root,
		SourceDir: e.src,
		Version:   "v1.2.3",
		Systemctl: e.sc,
		Users:     e.users,
		Getenv:    func(k string) string { return map[string]string{"SUDO_USER": "alice"}[k] },
		Geteuid:   func() int { return 0 },
		Now:       func() time.Time { return time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC) },
	}
	return e
}

// newSystemctl gives the env (and its options) a fresh fake systemctl.
func (e *env) newSystemctl() *fakeSystemctl {
	e.sc = &fakeSystemctl{}
	e.opts.Systemctl = e.sc
	return e.sc
}

func mkdir(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, p, content string, mode fs.FileMode) {
	t.Helper()
	mkdir(t, filepath.Dir(p))
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

// entry is one path of a snapshot.
type entry struct {
	mode fs.FileMode
	sum  [32]byte // of a regular file's content
	link string
}

// snapshot lists everything under root, by path relative to root.
func snapshot(t *testing.T, root string) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		e := entry{mode: fi.Mode()}
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			e.sum = sha256.Sum256(b)
		case fi.Mode()&fs.ModeSymlink != 0:
			e.link, _ = os.Readlink(p)
		}
		out[filepath.Join("/", rel)] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// diffSnapshots describes how b differs from a ("" when equal).
func diffSnapshots(a, b map[string]entry) string {
	var d []string
	for p, e := range a {
		if f, ok := b[p]; !ok {
			d = append(d, "gone: "+p)
		} else if e != f {
			d = append(d, "changed: "+p)
		}
	}
	for p := range b {
		if _, ok := a[p]; !ok {
			d = append(d, "new: "+p)
		}
	}
	slices.Sort(d)
	return strings.Join(d, "\n")
}
