// Package agentauth reads a coding-agent CLI's login files from the host
// user's home so `vm create|run --agent-auth` can copy them into a guest.
//
// Where each CLI keeps its login on Linux:
//   - claude (Claude Code): $CLAUDE_CONFIG_DIR or ~/.claude holds
//     .credentials.json (the OAuth login, required); ~/.claude.json (account
//     and onboarding state) is copied when present.
//   - codex (OpenAI Codex): $CODEX_HOME or ~/.codex holds auth.json.
//   - opencode: $XDG_DATA_HOME or ~/.local/share holds opencode/auth.json.
//
// In the guest they land at the default places under /root (the guest
// user's home, on the VM's work disk). Files are read through os.Root
// opened at the home (or, for a directory set outside it, that
// directory), so a symbolic link cannot lead out of it; only regular
// files of at most MaxFileBytes are read.
package agentauth

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"

	"banger/internal/api"
)

// MaxFileBytes caps one login file (they are a few KiB).
const MaxFileBytes = 256 << 10

// spec is one file of a CLI's login.
type spec struct {
	dir      string // the host directory the file lives in (its os.Root)
	rel      string // the file, relative to dir (slash-separated)
	guest    string // where it goes in the guest
	required bool
}

// Names lists the CLIs --agent-auth knows, sorted.
func Names() []string { return []string{"claude", "codex", "opencode"} }

// Env is what the lookup of the login files depends on; FromEnv fills it
// from the process environment.
type Env struct {
	Home, XDGDataHome, CodexHome, ClaudeConfigDir string
}

// FromEnv reads Env from the process environment.
func FromEnv() (Env, error) {
	home, err := os.UserHomeDir()
	if err != nil {
		return Env{}, fmt.Errorf("agent auth: %w", err)
	}
	return Env{Home: home, XDGDataHome: os.Getenv("XDG_DATA_HOME"),
		CodexHome: os.Getenv("CODEX_HOME"), ClaudeConfigDir: os.Getenv("CLAUDE_CONFIG_DIR")}, nil
}

func (e Env) specs(name string) ([]spec, error) {
	if !filepath.IsAbs(e.Home) {
		return nil, fmt.Errorf("agent auth: home directory %q is not absolute", e.Home)
	}
	abs := func(dir, def string) string {
		if dir != "" && filepath.IsAbs(dir) {
			return filepath.Clean(dir)
		}
		return filepath.Join(e.Home, def)
	}
	switch name {
	case "claude":
		cfg := abs(e.ClaudeConfigDir, ".claude")
		state := spec{dir: e.Home, rel: ".claude.json", guest: "/root/.claude.json"}
		if e.ClaudeConfigDir != "" {
			state.dir, state.rel = cfg, ".claude.json"
		}
		return []spec{
			{dir: cfg, rel: ".credentials.json", guest: "/root/.claude/.credentials.json", required: true},
			state,
		}, nil
	case "codex":
		return []spec{{dir: abs(e.CodexHome, ".codex"), rel: "auth.json", guest: "/root/.codex/auth.json", required: true}}, nil
	case "opencode":
		return []spec{{dir: abs(e.XDGDataHome, ".local/share"), rel: "opencode/auth.json",
			guest: "/root/.local/share/opencode/auth.json", required: true}}, nil
	}
	return nil, fmt.Errorf("--agent-auth %q: unknown; one of %s", name, strings.Join(Names(), ", "))
}

// Check refuses unknown or repeated CLI names.
func Check(names []string) error {
	seen := map[string]bool{}
	for _, n := range names {
		if !slices.Contains(Names(), n) {
			return fmt.Errorf("--agent-auth %q: unknown; one of %s", n, strings.Join(Names(), ", "))
		}
		if seen[n] {
			return fmt.Errorf("--agent-auth %s given twice", n)
		}
		seen[n] = true
	}
	return nil
}

// Files reads the login files of the CLIs names from env's home and
// returns them as guest files. A missing required file, a file that is
// not regular, too large or reached through a link out of its directory
// is an error naming the host path; nothing is returned then.
func (e Env) Files(names []string) ([]api.GuestFile, error) {
	if err := Check(names); err != nil {
		return nil, err
	}
	var out []api.GuestFile
	for _, n := range names {
		specs, err := e.specs(n)
		if err != nil {
			return nil, err
		}
		for _, s := range specs {
			host := filepath.Join(s.dir, filepath.FromSlash(s.rel))
			data, err := readConfined(e.confine(host))
			if errors.Is(err, fs.ErrNotExist) && !s.required {
				continue
			}
			if errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("--agent-auth %s: %s does not exist (log in with %s on this host first)", n, host, n)
			}
			if err != nil {
				return nil, fmt.Errorf("--agent-auth %s: %s: %w", n, host, err)
			}
			out = append(out, api.GuestFile{Path: s.guest, Data: data})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	if err := api.CheckGuestFiles(out); err != nil {
		return nil, fmt.Errorf("--agent-auth: %w", err)
	}
	return out, nil
}

// confine splits host into the directory a read is confined to and the
// path inside it: the home when host lies in it, else host's directory
// (CODEX_HOME and the like may point elsewhere).
func (e Env) confine(host string) (string, string) {
	if rel, err := filepath.Rel(e.Home, host); err == nil && filepath.IsLocal(rel) {
		return e.Home, filepath.ToSlash(rel)
	}
	return filepath.Dir(host), filepath.Base(host)
}

// readConfined reads the regular file rel inside dir, never following a
// link out of dir, and at most MaxFileBytes.
func readConfined(dir, rel string) ([]byte, error) {
	if !fs.ValidPath(rel) || path.Clean(rel) != rel {
		return nil, fmt.Errorf("bad relative path %q", rel)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	// O_NONBLOCK: a FIFO planted there must not hang the open.
	f, err := root.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("cannot open it inside %s: %w", dir, pe.Err)
		}
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file (%s)", fi.Mode().Type())
	}
	if fi.Size() > MaxFileBytes {
		return nil, fmt.Errorf("%d bytes, larger than the %d-byte limit for a login file", fi.Size(), MaxFileBytes)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("larger than the %d-byte limit for a login file", MaxFileBytes)
	}
	return data, nil
}

// Warning is what the CLI prints on stderr before it copies login files.
func Warning(names []string) string {
	return fmt.Sprintf("warning: --agent-auth copies the login of %s into the guest: the credential then lives in the VM, "+
		"where anything running there can read and use it until the VM is deleted. "+
		"For API keys, prefer banger secret (see README), which keeps the key on the host.", strings.Join(names, ", "))
}
