package sshkeys

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// The marker comment Install writes on the line above its Include. The
// second form records that Install created the file, so that Uninstall
// may delete it again.
const (
	markerLine        = "# Added by banger for ssh access to its VMs as NAME.vm; banger's uninstall removes these two lines."
	markerLineCreated = "# Added by banger (which created this file) for ssh access to its VMs as NAME.vm; banger's uninstall removes these two lines."
)

// includeLine is the directive Install writes for include.
func includeLine(include string) string {
	if strings.ContainsAny(include, " \t") {
		return `Include "` + include + `"`
	}
	return "Include " + include
}

// Install makes the user's ssh config (usually ~/.ssh/config) read the
// generated config include: it inserts a marker comment and one
// `Include <include>` line at the very top, where the Include applies to
// every host (an Include after a Host line would only apply inside that
// block). The user's content follows unchanged, byte for byte; the new
// lines use the file's line ending (CRLF if its first line has one).
//
// Install is idempotent: when the file already has an Include naming
// include anywhere (Install's own, or one the user wrote), it changes
// nothing. A missing file is created with mode 0600, and a missing parent
// directory with 0700; an existing file keeps its mode. A symlinked config
// (a dotfiles repository) is edited where it points, not replaced. The
// file is rewritten atomically.
func Install(userConfig, include string) (changed bool, err error) {
	if !filepath.IsAbs(include) {
		return false, fmt.Errorf("ssh config include %q is not an absolute path", include)
	}
	if strings.ContainsAny(include, "\"\r\n") {
		return false, fmt.Errorf("ssh config include %q contains a quote or newline", include)
	}
	target, err := resolveConfig(userConfig)
	if err != nil {
		return false, err
	}
	data, err := os.ReadFile(target)
	exists := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("read ssh config: %w", err)
	}
	if exists && hasInclude(data, include) {
		return false, nil
	}
	perm := fs.FileMode(0o600)
	marker := markerLine
	if exists {
		if fi, err := os.Stat(target); err == nil {
			perm = fi.Mode().Perm()
		}
	} else {
		marker = markerLineCreated
		if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
			return false, fmt.Errorf("create ssh config directory: %w", err)
		}
	}
	eol := "\n"
	if first, _, _ := bytes.Cut(data, []byte("\n")); bytes.HasSuffix(first, []byte("\r")) {
		eol = "\r\n"
	}
	out := []byte(marker + eol + includeLine(include) + eol)
	out = append(out, data...)
	if err := writeAtomic(target, out, perm); err != nil {
		return false, fmt.Errorf("write ssh config: %w", err)
	}
	return true, nil
}

// Uninstall removes what Install added: every marker comment of Install's
// directly followed by its Include line for include, wherever the user
// has moved them, leaving every other byte as it was. When Install
// created the file and nothing else is left in it, the file is deleted
// (the ~/.ssh directory is kept: ssh uses it anyway). An Include of
// include without the marker is the user's own and stays. A missing file
// is no change.
func Uninstall(userConfig, include string) (changed bool, err error) {
	target, err := resolveConfig(userConfig)
	if err != nil {
		return false, err
	}
	data, err := os.ReadFile(target)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read ssh config: %w", err)
	}
	want := includeLine(include)
	var (
		out     []byte
		created bool
		prev    []byte // a marker line held back until the next line is seen
		prevCr  bool
	)
	for line := range bytes.Lines(data) {
		body := string(bytes.TrimRight(line, "\r\n"))
		if prev != nil {
			if body == want {
				changed = true
				created = created || prevCr
				prev = nil
				continue
			}
			out = append(out, prev...)
			prev = nil
		}
		if body == markerLine || body == markerLineCreated {
			prev, prevCr = line, body == markerLineCreated
			continue
		}
		out = append(out, line...)
	}
	out = append(out, prev...)
	if !changed {
		return false, nil
	}
	if created && len(out) == 0 {
		if err := os.Remove(target); err != nil {
			return false, fmt.Errorf("remove ssh config: %w", err)
		}
		return true, nil
	}
	perm := fs.FileMode(0o600)
	if fi, err := os.Stat(target); err == nil {
		perm = fi.Mode().Perm()
	}
	if err := writeAtomic(target, out, perm); err != nil {
		return false, fmt.Errorf("write ssh config: %w", err)
	}
	return true, nil
}

// resolveConfig follows a symlinked config to the file to edit; a path
// that does not exist is returned as it is.
func resolveConfig(p string) (string, error) {
	fi, err := os.Lstat(p)
	if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		return p, nil
	}
	target, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", fmt.Errorf("ssh config %s is a symlink that cannot be followed: %w", p, err)
	}
	return target, nil
}

// hasInclude reports whether an ssh config has an Include directive
// naming include ("~/" expanded).
func hasInclude(data []byte, include string) bool {
	home, _ := os.UserHomeDir()
	for line := range strings.Lines(string(data)) {
		line = strings.TrimSpace(line)
		kw, rest := line, ""
		if i := strings.IndexAny(line, " \t="); i >= 0 {
			kw, rest = line[:i], strings.TrimLeft(line[i:], " \t=")
		}
		if !strings.EqualFold(kw, "include") {
			continue
		}
		for _, arg := range configArgs(rest) {
			if strings.HasPrefix(arg, "~/") && home != "" {
				arg = filepath.Join(home, arg[2:])
			}
			if filepath.Clean(arg) == filepath.Clean(include) {
				return true
			}
		}
	}
	return false
}

// configArgs splits ssh config arguments, honouring double quotes.
func configArgs(s string) []string {
	var args []string
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" || s[0] == '#' {
			return args
		}
		if s[0] == '"' {
			end := strings.IndexByte(s[1:], '"')
			if end < 0 {
				return append(args, s[1:])
			}
			args = append(args, s[1:1+end])
			s = s[2+end:]
			continue
		}
		end := strings.IndexAny(s, " \t")
		if end < 0 {
			return append(args, s)
		}
		args = append(args, s[:end])
		s = s[end:]
	}
}
