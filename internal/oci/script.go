package oci

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// debugfs reads its -f file line by line (a '\n' or '\r' ends a line)
// and hands each line to the ss library, which runs a line starting
// with '!' through system(3). Other commands (write, dump, rdump,
// set_current_time...) read or write host files. So the script is never
// built by formatting strings: script has one method per command banger
// needs (ls -p, sif, ea_set -f, cd, mknod), each argument is checked,
// and anything that debugfs could read as more than one argument of
// that command is refused, not escaped and hoped for. File contents and
// extended attribute values never enter the script: ea_set reads them
// from a file (-f).

// script builds a debugfs command file.
type script struct {
	b bytes.Buffer
	n int // commands
}

// Bytes returns the script.
func (s *script) Bytes() []byte { return s.b.Bytes() }

// Len is the number of commands.
func (s *script) Len() int { return s.n }

// target names an inode: by number ("<12>") or by an absolute path.
type target struct {
	ino  uint64
	path string
}

func inode(ino uint64) target    { return target{ino: ino} }
func pathTarget(p string) target { return target{path: p} }

func (t target) arg() (string, error) {
	if t.path == "" {
		if t.ino == 0 {
			return "", fmt.Errorf("script: inode 0")
		}
		return "<" + strconv.FormatUint(t.ino, 10) + ">", nil
	}
	if !strings.HasPrefix(t.path, "/") {
		return "", fmt.Errorf("script: path %q is not absolute", t.path)
	}
	return quoteArg(t.path)
}

// quoteArg checks s and quotes it for debugfs' parser, which reads ""
// inside double quotes as one literal quote. It refuses the empty
// string and every control character (line breaks end a command; a
// NUL, tab or escape has no business in a file name).
func quoteArg(s string) (string, error) {
	if s == "" {
		return "", fmt.Errorf("script: empty argument")
	}
	if err := noControl(s); err != nil {
		return "", fmt.Errorf("script: %w", err)
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`, nil
}

// noControl refuses ASCII control characters (0x00-0x1f, 0x7f).
func noControl(s string) error {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return fmt.Errorf("%q holds control character %#02x", s, c)
		}
	}
	return nil
}

// maxLine bounds a script line, its '\n' included. debugfs -f reads
// its file with fgets(buf, BUFSIZ) (8192 on glibc): a longer line is
// cut there and its remainder runs as a command of its own, and a
// remainder starting with '!' goes to system(3). A long name, doubled
// quotes and a hostile extended attribute name are enough to place
// that cut. So a line that could come near BUFSIZ is refused, never
// split: 4096 leaves half of glibc's buffer spare, and is also the
// smallest BUFSIZ of the C libraries e2fsprogs is built against.
const maxLine = 4096

// line appends one command, or refuses it if it would reach maxLine.
func (s *script) line(words ...string) error {
	l := strings.Join(words, " ")
	if len(l)+1 >= maxLine {
		return fmt.Errorf("script: %s command of %d bytes, the limit is %d (name too long once quoted?)", words[0], len(l)+1, maxLine-1)
	}
	s.b.WriteString(l)
	s.b.WriteByte('\n')
	s.n++
	return nil
}

// ls lists directory dir (absolute) with inode, mode and owner.
func (s *script) ls(dir string) error {
	a, err := pathTarget(dir).arg()
	if err != nil {
		return err
	}
	return s.line("ls", "-p", a)
}

// sifFields are the inode fields set_inode_field may change.
var sifFields = map[string]bool{"mode": true, "uid": true, "gid": true, "mtime": true, "block[1]": true}

// sif sets inode field of t to value (mtime: seconds since the epoch).
func (s *script) sif(t target, field string, value uint64) error {
	if !sifFields[field] {
		return fmt.Errorf("script: inode field %q not allowed", field)
	}
	a, err := t.arg()
	if err != nil {
		return err
	}
	v := strconv.FormatUint(value, 10)
	switch field {
	case "mode":
		v = "0" + strconv.FormatUint(value, 8)
	case "mtime":
		v = "@" + v
	}
	return s.line("sif", a, field, v)
}

// eaSet sets extended attribute key of t to the content of valueFile
// (a file banger wrote, absolute).
func (s *script) eaSet(t target, valueFile, key string) error {
	if err := checkXattrName(key); err != nil {
		return fmt.Errorf("script: %w", err)
	}
	if !strings.HasPrefix(valueFile, "/") {
		return fmt.Errorf("script: value file %q is not absolute", valueFile)
	}
	vf, err := quoteArg(valueFile)
	if err != nil {
		return err
	}
	a, err := t.arg()
	if err != nil {
		return err
	}
	k, err := quoteArg(key)
	if err != nil {
		return err
	}
	return s.line("ea_set", "-f", vf, a, k)
}

// cd changes debugfs' current directory.
func (s *script) cd(dir target) error {
	a, err := dir.arg()
	if err != nil {
		return err
	}
	return s.line("cd", a)
}

// mknod makes name (one path component) in the current directory: kind
// 'c' or 'b' with major and minor (at most 0xffff each), or 'p' (a
// fifo, numbers ignored).
func (s *script) mknod(name string, kind byte, major, minor uint32) error {
	if err := checkComponent(name); err != nil {
		return fmt.Errorf("script: %w", err)
	}
	n, err := quoteArg(name)
	if err != nil {
		return err
	}
	switch kind {
	case 'p':
		return s.line("mknod", n, "p")
	case 'c', 'b':
		if major > 0xffff || minor > 0xffff {
			return fmt.Errorf("script: device %d:%d out of mknod's range", major, minor)
		}
		return s.line("mknod", n, string(kind), strconv.FormatUint(uint64(major), 10), strconv.FormatUint(uint64(minor), 10))
	default:
		return fmt.Errorf("script: mknod kind %q", kind)
	}
}
