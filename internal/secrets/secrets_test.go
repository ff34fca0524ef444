package secrets

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"banger/internal/egress/policy"
)

func TestStore(t *testing.T) {
	state := t.TempDir()
	s, err := Open(state)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fi, err := os.Stat(filepath.Join(state, "secrets"))
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("store dir: %v %v", fi.Mode(), err)
	}
	if err := s.Set("OPENAI_KEY", []byte("sk-real")); err != nil {
		t.Fatal(err)
	}
	if err := s.Set("gh.token", []byte("ghp_1")); err != nil {
		t.Fatal(err)
	}
	if err := s.Set("gh.token", []byte("ghp_2")); err != nil {
		t.Fatal(err)
	}
	fi, err = os.Stat(filepath.Join(state, "secrets", "OPENAI_KEY"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret file: %v %v", fi.Mode(), err)
	}
	if v, err := s.Get("gh.token"); err != nil || string(v) != "ghp_2" {
		t.Fatalf("Get = %q, %v", v, err)
	}
	names, err := s.List()
	if err != nil || !reflect.DeepEqual(names, []string{"OPENAI_KEY", "gh.token"}) {
		t.Fatalf("List = %v, %v", names, err)
	}
	if err := s.Remove("gh.token"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get("gh.token"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after Remove: %v", err)
	}
	if err := s.Remove("gh.token"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Remove twice: %v", err)
	}
	// A reopened store (a new daemon) sees the same secrets, and fixes a
	// directory mode someone loosened.
	os.Chmod(filepath.Join(state, "secrets"), 0o755)
	s2, err := Open(state)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if v, err := s2.Get("OPENAI_KEY"); err != nil || string(v) != "sk-real" {
		t.Fatalf("reopened Get = %q, %v", v, err)
	}
	if fi, _ := os.Stat(filepath.Join(state, "secrets")); fi.Mode().Perm() != 0o700 {
		t.Errorf("reopened store dir mode %v", fi.Mode())
	}
}

func TestStoreHostile(t *testing.T) {
	state := t.TempDir()
	s, err := Open(state)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	outside := filepath.Join(state, "outside")
	os.WriteFile(outside, []byte("not a secret"), 0o600)
	for _, name := range []string{"", ".", "..", "../outside", "a/b", "/etc/passwd", ".hidden", "-rf", "a\x00b", "a b", strings.Repeat("a", 65), "é"} {
		if err := s.Set(name, []byte("v")); err == nil {
			t.Errorf("Set(%q) accepted", name)
		}
		if _, err := s.Get(name); err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%q) = %v, want a name error", name, err)
		}
		if err := s.Remove(name); err == nil {
			t.Errorf("Remove(%q) accepted", name)
		}
	}
	if err := s.Set("EMPTY", nil); err == nil {
		t.Error("empty value accepted")
	}
	if err := s.Set("BIG", make([]byte, MaxValueSize+1)); err == nil {
		t.Error("oversized value accepted")
	}
	if err := s.Set("MAX", make([]byte, MaxValueSize)); err != nil {
		t.Errorf("value of exactly the cap refused: %v", err)
	}
	// A symlink planted in the store is not followed.
	if err := os.Symlink(outside, filepath.Join(state, "secrets", "LINK")); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Get("LINK"); err == nil {
		t.Errorf("Get followed a symlink out of the store: %q", v)
	}
	names, _ := s.List()
	for _, n := range names {
		if n == "LINK" {
			t.Error("List shows a symlink")
		}
	}
	// Nothing was created outside the store, and no temporary files stay.
	ents, _ := os.ReadDir(filepath.Join(state, "secrets"))
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("stray file %s", e.Name())
		}
	}
	if b, _ := os.ReadFile(outside); string(b) != "not a secret" {
		t.Error("file outside the store changed")
	}
	// A state dir whose "secrets" is a file is refused.
	bad := t.TempDir()
	os.WriteFile(filepath.Join(bad, "secrets"), nil, 0o600)
	if _, err := Open(bad); err == nil {
		t.Error("Open accepted a file as the store directory")
	}
}

func testPolicy(t *testing.T) *policy.Policy {
	p, err := policy.Build(policy.Spec{Secrets: []policy.SecretSpec{
		{Name: "OPENAI_KEY", Hosts: []string{"api.openai.com"}, Env: "OPENAI_API_KEY"},
		{Name: "GH", Hosts: []string{"*.github.com"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBindings(t *testing.T) {
	p := testPolicy(t)
	a, err := Bind(p)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Bind(p)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, bs := range []*Bindings{a, b} {
		for _, bd := range bs.All() {
			if !strings.HasPrefix(bd.Placeholder, PlaceholderPrefix) || len(bd.Placeholder) != len(PlaceholderPrefix)+32 {
				t.Errorf("placeholder %q", bd.Placeholder)
			}
			if seen[bd.Placeholder] {
				t.Errorf("placeholder %q reused across VMs or secrets", bd.Placeholder)
			}
			seen[bd.Placeholder] = true
			if got := FindPlaceholders("x " + bd.Placeholder + " y"); len(got) != 1 || got[0] != bd.Placeholder {
				t.Errorf("FindPlaceholders = %v", got)
			}
			if l, ok := bs.Lookup(bd.Placeholder); !ok || l.Secret.Name != bd.Secret.Name {
				t.Errorf("Lookup(%q) = %v %v", bd.Placeholder, l, ok)
			}
		}
	}
	env := a.Env()
	ph, _ := a.Placeholder("OPENAI_KEY")
	if len(env) != 2 || env["OPENAI_API_KEY"] != ph || env["GH"] == "" {
		t.Errorf("Env = %v", env)
	}
	if _, ok := b.Lookup(ph); ok {
		t.Error("one VM's placeholder is known to another VM's bindings")
	}
	bd, _ := a.Lookup(ph)
	if !bd.Secret.AllowsHost("api.openai.com", 443) || bd.Secret.AllowsHost("api.github.com", 443) {
		t.Errorf("binding hosts: %+v", bd.Secret)
	}

	// A policy change keeps the placeholders of the secrets it keeps.
	p2, _ := policy.Build(policy.Spec{Secrets: []policy.SecretSpec{{Name: "OPENAI_KEY", Hosts: []string{"api2.openai.com"}, Env: "OPENAI_API_KEY"}}})
	c, err := Rebind(a, p2)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Placeholder("OPENAI_KEY"); got != ph {
		t.Errorf("Rebind changed the placeholder: %q -> %q", ph, got)
	}
	if _, ok := c.Placeholder("GH"); ok {
		t.Error("Rebind kept a dropped secret")
	}
	if l, _ := c.Lookup(ph); !l.Secret.AllowsHost("api2.openai.com", 443) || l.Secret.AllowsHost("api.openai.com", 443) {
		t.Error("Rebind kept the old hosts")
	}
	// A daemon restart: the stored placeholders come back.
	saved := a.Placeholders()
	r, err := Restore(p, saved)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := r.Placeholder("GH"); got != saved["GH"] || len(r.All()) != 2 {
		t.Errorf("Restore: %v", r.Placeholders())
	}
	if _, err := Restore(p, map[string]string{"GH": "banger-secret-../../x"}); err == nil {
		t.Error("Restore accepted a malformed placeholder")
	}
	if !IsPlaceholder(saved["GH"]) || IsPlaceholder(saved["GH"]+"0") || IsPlaceholder("x"+saved["GH"]) {
		t.Error("IsPlaceholder")
	}
	var nilB *Bindings
	if _, ok := nilB.Lookup(ph); ok || len(nilB.Env()) != 0 {
		t.Error("nil Bindings not empty")
	}
	if FindPlaceholders("banger-secret-XYZ banger-secret-0123") != nil {
		t.Error("FindPlaceholders matched a malformed placeholder")
	}
}
