package sshkeys

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

// KnownHosts manages banger's own known_hosts file (never
// ~/.ssh/known_hosts), named in the generated ssh config as
// UserKnownHostsFile. Updates are serialised between processes with an
// flock on Path+".lock" and written atomically.
type KnownHosts struct{ Path string }

// HostPattern returns the known_hosts name of host at port, as ssh looks
// it up: the bare host for port 22 (or 0), "[host]:port" otherwise.
func HostPattern(host string, port int) string {
	host = strings.ToLower(strings.Trim(host, "[]"))
	if port == 0 || port == 22 {
		return host
	}
	return "[" + host + "]:" + strconv.Itoa(port)
}

// normalizeHost lowercases a host pattern and turns "[host]:22" into
// "host", which is how ssh writes and looks up port 22.
func normalizeHost(h string) (string, error) {
	h = strings.ToLower(strings.TrimSpace(h))
	if h == "" || strings.ContainsAny(h, " \t\r\n,#") || strings.HasPrefix(h, "|") || strings.HasPrefix(h, "@") {
		return "", fmt.Errorf("invalid known_hosts host %q", h)
	}
	if strings.HasPrefix(h, "[") {
		host, port, err := net.SplitHostPort(h)
		if err != nil {
			return "", fmt.Errorf("invalid known_hosts host %q: %w", h, err)
		}
		if port == "22" {
			return host, nil
		}
	}
	return h, nil
}

// Set replaces every entry for hosts (known_hosts names such as "box.vm",
// "172.16.0.2" or "[127.0.0.1]:2222") with one line per key in keys
// ("ssh-ed25519 AAAA..." with or without a comment), all hosts on each
// line. A host that shares a line with other hosts is taken off that line;
// the others keep it. Other lines, comments included, are left as they
// are. So a new VM that reuses an old address or name never meets the old
// VM's key. With no keys, Set is Remove.
func (k KnownHosts) Set(hosts []string, keys []string) error {
	names, err := normalizeHosts(hosts)
	if err != nil {
		return err
	}
	var lines []string
	for i, key := range keys {
		pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(key))
		if err != nil {
			return fmt.Errorf("host key %d for %s: %w", i+1, strings.Join(names, ","), err)
		}
		lines = append(lines, strings.Join(names, ",")+" "+authorizedLine(pk, ""))
	}
	return k.update(names, lines)
}

// Remove deletes every entry for hosts, as Set does before adding.
func (k KnownHosts) Remove(hosts []string) error {
	names, err := normalizeHosts(hosts)
	if err != nil {
		return err
	}
	return k.update(names, nil)
}

func normalizeHosts(hosts []string) ([]string, error) {
	var names []string
	seen := map[string]bool{}
	for _, h := range hosts {
		n, err := normalizeHost(h)
		if err != nil {
			return nil, err
		}
		if !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return nil, errors.New("no hosts given")
	}
	return names, nil
}

// update drops names from the file and appends add, under the lock.
func (k KnownHosts) update(names []string, add []string) error {
	if err := os.MkdirAll(filepath.Dir(k.Path), 0o700); err != nil {
		return fmt.Errorf("create known_hosts directory: %w", err)
	}
	lock, err := os.OpenFile(k.Path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("lock known_hosts: %w", err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock known_hosts: %w", err)
	}

	perm := fs.FileMode(0o600)
	data, err := os.ReadFile(k.Path)
	switch {
	case err == nil:
		if fi, err := os.Stat(k.Path); err == nil {
			perm = fi.Mode().Perm()
		}
	case errors.Is(err, fs.ErrNotExist):
	default:
		return fmt.Errorf("read known_hosts: %w", err)
	}
	out := dropHosts(data, names)
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\n')
	}
	for _, l := range add {
		out = append(out, l...)
		out = append(out, '\n')
	}
	if bytes.Equal(out, data) {
		return nil
	}
	if err := writeAtomic(k.Path, out, perm); err != nil {
		return fmt.Errorf("write known_hosts: %w", err)
	}
	return nil
}

// dropHosts removes names from every line of a known_hosts file. Lines
// that do not mention them are kept byte for byte.
func dropHosts(data []byte, names []string) []byte {
	var out []byte
	for line := range bytes.Lines(data) {
		body := bytes.TrimRight(line, "\r\n")
		eol := line[len(body):]
		trimmed := bytes.TrimLeft(body, " \t")
		if len(trimmed) == 0 || trimmed[0] == '#' {
			out = append(out, line...)
			continue
		}
		// The host list is the first field, or the second after a
		// @cert-authority or @revoked marker.
		start := len(body) - len(trimmed)
		if trimmed[0] == '@' {
			i := bytes.IndexAny(trimmed, " \t")
			if i < 0 {
				out = append(out, line...)
				continue
			}
			rest := bytes.TrimLeft(trimmed[i:], " \t")
			start = len(body) - len(rest)
		}
		end := bytes.IndexAny(body[start:], " \t")
		if end < 0 {
			end = len(body)
		} else {
			end += start
		}
		var kept []string
		dropped := false
		for p := range strings.SplitSeq(string(body[start:end]), ",") {
			if matchesAny(p, names) {
				dropped = true
			} else {
				kept = append(kept, p)
			}
		}
		switch {
		case !dropped:
			out = append(out, line...)
		case len(kept) == 0:
			// Every host of the line is gone: so is the line.
		default:
			out = append(out, body[:start]...)
			out = append(out, strings.Join(kept, ",")...)
			out = append(out, body[end:]...)
			out = append(out, eol...)
		}
	}
	return out
}

// matchesAny reports whether the known_hosts pattern p names one of names
// exactly: plainly (case-insensitively) or hashed (|1|salt|hash).
// Wildcard and negated patterns are never matched.
func matchesAny(p string, names []string) bool {
	if salt, hash, ok := parseHashed(p); ok {
		for _, n := range names {
			mac := hmac.New(sha1.New, salt)
			mac.Write([]byte(n))
			if hmac.Equal(mac.Sum(nil), hash) {
				return true
			}
		}
		return false
	}
	if n, err := normalizeHost(p); err == nil {
		p = n
	}
	for _, n := range names {
		if p == n {
			return true
		}
	}
	return false
}

func parseHashed(p string) (salt, hash []byte, ok bool) {
	rest, ok := strings.CutPrefix(p, "|1|")
	if !ok {
		return nil, nil, false
	}
	s, h, ok := strings.Cut(rest, "|")
	if !ok {
		return nil, nil, false
	}
	salt, err1 := base64.StdEncoding.DecodeString(s)
	hash, err2 := base64.StdEncoding.DecodeString(h)
	return salt, hash, err1 == nil && err2 == nil
}
