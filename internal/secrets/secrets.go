// Package secrets keeps the values of named secrets on the host, outside
// every VM, and makes the per-VM placeholders that stand for them inside
// a guest.
//
// A Store is a directory (mode 0700) of one file per secret (mode 0600,
// written atomically), under the daemon's state directory. banger uses
// these files rather than an OS keyring: the daemon runs headless (no
// session keyring or D-Bus secret service to rely on), and the files are
// readable only by the user the daemon runs as, which is the same trust
// boundary a keyring would give it.
//
// A guest never sees a value: it gets a placeholder, "banger-secret-"
// followed by 32 random hex digits (128 bits from crypto/rand), unique to
// the VM and the secret, which the egress proxy swaps for the value on
// requests to the hosts the secret is bound to (Bindings).
package secrets

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"syscall"

	"banger/internal/egress/policy"
	"banger/internal/fsutil"
)

// MaxValueSize caps a secret's value.
const MaxValueSize = 64 << 10

// ErrNotFound is returned for a secret that is not stored.
var ErrNotFound = errors.New("secret not found")

// Store is the on-disk secret store.
type Store struct {
	dir  string
	root *os.Root
}

// Open opens (creating it if needed) the store in stateDir/secrets. The
// directory is forced to mode 0700; a symlink there is refused.
func Open(stateDir string) (*Store, error) {
	dir := filepath.Join(stateDir, "secrets")
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("open secret store: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("open secret store: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return nil, fmt.Errorf("open secret store: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("open secret store: %s is not a directory", dir)
	}
	if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, fmt.Errorf("open secret store: %w", err)
		}
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open secret store: %w", err)
	}
	return &Store{dir: dir, root: root}, nil
}

// Close releases the store's directory handle.
func (s *Store) Close() error { return s.root.Close() }

func checkName(name string) error {
	if !policy.ValidSecretName(name) {
		return fmt.Errorf("secret name %q: want 1-64 letters, digits, _ . - (not starting with . or -)", name)
	}
	return nil
}

// Set stores value under name, replacing any previous value. The value
// must be 1 to MaxValueSize bytes.
func (s *Store) Set(name string, value []byte) error {
	if err := checkName(name); err != nil {
		return err
	}
	if len(value) == 0 {
		return fmt.Errorf("set secret %q: empty value", name)
	}
	if len(value) > MaxValueSize {
		return fmt.Errorf("set secret %q: value larger than %d bytes", name, MaxValueSize)
	}
	if err := fsutil.AtomicWriteFile(filepath.Join(s.dir, name), value, 0o600); err != nil {
		return fmt.Errorf("set secret %q: %w", name, err)
	}
	return nil
}

// Get returns the value of name, or ErrNotFound.
func (s *Store) Get(name string) ([]byte, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	f, err := s.root.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("get secret %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get secret %q: %w", name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("get secret %q: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("get secret %q: not a regular file", name)
	}
	v, err := io.ReadAll(io.LimitReader(f, MaxValueSize+1))
	if err != nil {
		return nil, fmt.Errorf("get secret %q: %w", name, err)
	}
	if len(v) > MaxValueSize {
		return nil, fmt.Errorf("get secret %q: stored value larger than %d bytes", name, MaxValueSize)
	}
	return v, nil
}

// List returns the names of the stored secrets, sorted. Values are never
// listed.
func (s *Store) List() ([]string, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("list secrets: %w", err)
	}
	var names []string
	for _, e := range ents {
		// Temporary files of an interrupted Set start with a dot.
		if e.Type().IsRegular() && policy.ValidSecretName(e.Name()) {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

// Remove deletes name, or returns ErrNotFound.
func (s *Store) Remove(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	err := s.root.Remove(name)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove secret %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("remove secret %q: %w", name, err)
	}
	return fsutil.SyncDir(s.dir)
}

// Contains reports whether b holds any of the values; used by tests and
// checks that prove a value never reached a place.
func Contains(b []byte, values ...[]byte) bool {
	for _, v := range values {
		if len(v) > 0 && bytes.Contains(b, v) {
			return true
		}
	}
	return false
}
