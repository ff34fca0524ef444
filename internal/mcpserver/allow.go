package mcpserver

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Allowlist holds the host directories an MCP client may prepare
// workspaces from (banger mcp --allow-path). Every directory is kept with
// its symbolic links resolved, and every path checked against it is
// resolved the same way first, so neither ".." nor a link pointing out of
// an allowed directory gets past it.
type Allowlist struct {
	roots []string
}

// NewAllowlist resolves dirs (each must exist and be a directory).
func NewAllowlist(dirs []string) (*Allowlist, error) {
	a := &Allowlist{}
	for _, d := range dirs {
		r, err := resolve(d)
		if err != nil {
			return nil, fmt.Errorf("allowed path %q: %w", d, err)
		}
		fi, err := os.Stat(r)
		if err != nil {
			return nil, fmt.Errorf("allowed path %q: %w", d, err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("allowed path %q is not a directory", d)
		}
		a.roots = append(a.roots, r)
	}
	return a, nil
}

// Roots lists the resolved allowed directories.
func (a *Allowlist) Roots() []string { return append([]string(nil), a.roots...) }

// Check resolves path (which must be absolute) and returns it when it is
// an allowed directory or lies below one; anything else is refused.
func (a *Allowlist) Check(path string) (string, error) {
	if !filepath.IsAbs(path) {
		return "", fmt.Errorf("path %q must be absolute", path)
	}
	r, err := resolve(path)
	if err != nil {
		return "", fmt.Errorf("path %q: %w", path, err)
	}
	if !a.contains(r) {
		return "", fmt.Errorf("path %q (resolved to %s) is outside the directories allowed with --allow-path", path, r)
	}
	return r, nil
}

// contains reports whether the resolved path r is an allowed directory
// or below one.
func (a *Allowlist) contains(r string) bool {
	for _, root := range a.roots {
		if r == root || strings.HasPrefix(r, strings.TrimSuffix(root, "/")+"/") {
			return true
		}
	}
	return false
}

func resolve(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(abs)
}
