// Package patchcheck decides whether a git patch written by a guest is safe
// to hand to `git apply` on the host: every path it names stays inside the
// repository and outside .git, and every symlink it creates or changes
// points inside the repository.
//
// The checker is a strict parser of what `git diff --binary` produces, not a
// tolerant one: a line it does not understand fails the check, so a patch
// cannot carry something that git would apply but the checker skipped.
// It reads the patch as a stream and keeps at most one header line (and a
// symlink's target) in memory, whatever the patch's size.
package patchcheck

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
)

// Limits on what is kept in memory. Header lines longer than maxHeader are
// refused; content lines are skipped past after their first byte, except a
// symlink's, whose target (at most PATH_MAX) is kept.
const (
	maxHeader = 64 << 10
	maxTarget = 4096
)

// Error says why a patch was refused.
type Error struct {
	Line   int    // 1-based line of the patch
	Path   string // the offending path or symlink, when there is one
	Reason string
}

func (e *Error) Error() string {
	if e.Path != "" {
		return fmt.Sprintf("patch line %d: %q: %s", e.Line, e.Path, e.Reason)
	}
	return fmt.Sprintf("patch line %d: %s", e.Line, e.Reason)
}

// Summary describes an accepted patch.
type Summary struct {
	Files    int // file entries
	Symlinks int // entries whose result is a symlink
}

// git's file modes a patch may carry.
const (
	modeFile    = "100644"
	modeExec    = "100755"
	modeSymlink = "120000"
	modeGitlink = "160000"
)

// Check reads a whole patch from r and returns an *Error for the first
// thing that makes it unsafe or that it cannot parse. An empty patch is
// fine.
func Check(r io.Reader) (Summary, error) {
	p := &parser{r: bufio.NewReaderSize(r, 64<<10)}
	err := p.run()
	return p.sum, err
}

type parser struct {
	r    *bufio.Reader
	n    int // current line number
	sum  Summary
	peek *line
}

type line struct {
	text      []byte // the line without its newline, at most the keep limit
	truncated bool
	eof       bool
}

// next returns the next line, keeping at most keep bytes of it.
func (p *parser) next(keep int) (line, error) {
	if p.peek != nil {
		l := *p.peek
		p.peek = nil
		if l.truncated && len(l.text) > keep {
			l.text = l.text[:keep]
		}
		return l, nil
	}
	var l line
	for {
		chunk, err := p.r.ReadSlice('\n')
		if room := keep - len(l.text); room > 0 {
			c := chunk
			if len(c) > room {
				c = c[:room]
				l.truncated = true
			}
			l.text = append(l.text, c...)
		} else if len(chunk) > 0 && !(len(chunk) == 1 && chunk[0] == '\n') {
			l.truncated = true
		}
		switch {
		case err == nil:
			p.n++
			l.text = bytes.TrimSuffix(l.text, []byte("\n"))
			return l, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			if len(l.text) == 0 && !l.truncated {
				l.eof = true
				return l, nil
			}
			p.n++
			return l, p.fail("", "the last line has no newline")
		default:
			return l, fmt.Errorf("read patch: %w", err)
		}
	}
}

// header returns the next line as a header line (refused when too long).
func (p *parser) header() (line, error) {
	l, err := p.next(maxHeader + 1)
	if err == nil && (l.truncated || len(l.text) > maxHeader) {
		return l, p.fail("", "header line over %d bytes", maxHeader)
	}
	return l, err
}

func (p *parser) unread(l line) { p.peek = &l }

func (p *parser) fail(path, format string, args ...any) error {
	return &Error{Line: p.n, Path: path, Reason: fmt.Sprintf(format, args...)}
}

func (p *parser) run() error {
	for {
		l, err := p.header()
		if err != nil {
			return err
		}
		if l.eof {
			return nil
		}
		rest, ok := bytes.CutPrefix(l.text, []byte("diff --git "))
		if !ok {
			return p.fail("", "expected a \"diff --git\" line, got %q", clip(l.text))
		}
		if err := p.file(string(rest)); err != nil {
			return err
		}
		p.sum.Files++
	}
}

// entry is what the checker learns about one file of the patch.
//
// Modes follow git apply's own model: "old mode", "deleted file mode" and
// the mode of an "index" line all set the old mode; "new mode" and "new
// file mode" set the new mode. When no new mode is given, git apply keeps
// the file's current mode, whose type must match the old mode ("wrong
// type" otherwise), so the result has the new mode's type, else the old
// one's. Each side may be set by one line only (git diff never writes
// more), so later lines cannot contradict what was checked.
type entry struct {
	names              []string // every name the headers gave (prefix stripped)
	oldMode, newMode   string   // see above
	sawIndex           bool
	renameOrCopy       bool
	deleted            bool
	isNew              bool
	newPath            string // the path the result is written to
	hunks              int
	binary             bool
	target             []byte // new content of the file, when kept
	targetBad          string // why the new content cannot serve as a target
	hunkNewStartBeyond bool
}

// resultMode is the file's mode after the patch ("" when it is deleted or
// the patch does not say).
func (e *entry) resultMode() string {
	switch {
	case e.deleted:
		return ""
	case e.newMode != "":
		return e.newMode
	}
	return e.oldMode
}

// setMode records a mode line's mode on one side of the entry, refusing
// a second line for the same side.
func (p *parser) setMode(e *entry, side *string, m string) error {
	if err := p.mode(m); err != nil {
		return err
	}
	if *side != "" {
		return p.fail(e.newPath, "more than one header line gives the same mode")
	}
	*side = m
	return nil
}

func (p *parser) file(gitLine string) error {
	e := &entry{}
	a, b, ok, err := splitGitHeader(gitLine)
	if err != nil {
		return p.fail("", "diff --git line: %v", err)
	}
	if ok {
		for _, n := range []string{a, b} {
			if err := p.addPrefixed(e, n); err != nil {
				return err
			}
		}
		e.newPath = e.names[1]
	}
	var minus, plus, m string
	sawNames := false
	for {
		l, err := p.header()
		if err != nil {
			return err
		}
		t := string(l.text)
		switch {
		case l.eof || strings.HasPrefix(t, "diff --git "):
			p.unread(l)
			return p.finish(e, ok || sawNames)
		case cut(t, "old mode ", &m):
			if err := p.setMode(e, &e.oldMode, m); err != nil {
				return err
			}
		case cut(t, "new mode ", &m):
			if err := p.setMode(e, &e.newMode, m); err != nil {
				return err
			}
		case cut(t, "deleted file mode ", &m):
			e.deleted = true
			if err := p.setMode(e, &e.oldMode, m); err != nil {
				return err
			}
		case cut(t, "new file mode ", &m):
			e.isNew = true
			if err := p.setMode(e, &e.newMode, m); err != nil {
				return err
			}
		case strings.HasPrefix(t, "similarity index "), strings.HasPrefix(t, "dissimilarity index "):
			if !percent(t[strings.LastIndexByte(t, ' ')+1:]) {
				return p.fail("", "bad similarity line %q", clip(l.text))
			}
		case renameLine(t) != "":
			pfx := renameLine(t)
			e.renameOrCopy = true
			name, err := unquote(t[len(pfx):])
			if err != nil {
				return p.fail("", "%v", err)
			}
			if err := p.add(e, name); err != nil {
				return err
			}
			if strings.HasSuffix(pfx, " to ") {
				e.newPath = name
			}
			sawNames = true
		case strings.HasPrefix(t, "index "):
			if err := p.index(e, t[len("index "):]); err != nil {
				return err
			}
		case strings.HasPrefix(t, "--- "):
			minus = t[len("--- "):]
			pl, err := p.header()
			if err != nil {
				return err
			}
			pt, found := strings.CutPrefix(string(pl.text), "+++ ")
			if !found {
				return p.fail("", "\"---\" line without a \"+++\" line")
			}
			plus = pt
			for i, n := range []string{minus, plus} {
				if n == "/dev/null" {
					continue
				}
				name, err := lineName(n)
				if err != nil {
					return p.fail("", "%v", err)
				}
				if err := p.addPrefixed(e, name); err != nil {
					return err
				}
				if i == 1 {
					e.newPath = e.names[len(e.names)-1]
				}
			}
			sawNames = true
			if err := p.hunks(e); err != nil {
				return err
			}
			return p.finish(e, true)
		case t == "GIT binary patch":
			e.binary = true
			if err := p.binaryData(); err != nil {
				return err
			}
			return p.finish(e, ok || sawNames)
		case strings.HasPrefix(t, "Binary files "):
			return p.fail(e.newPath, "binary change without its data (export with --binary)")
		default:
			return p.fail(e.newPath, "unexpected line in a file header: %q", clip(l.text))
		}
	}
}

// renameLine returns the rename/copy prefix t starts with, or "".
func renameLine(t string) string {
	for _, pfx := range []string{"rename from ", "rename to ", "copy from ", "copy to "} {
		if strings.HasPrefix(t, pfx) {
			return pfx
		}
	}
	return ""
}

func cut(s, prefix string, into *string) bool {
	v, ok := strings.CutPrefix(s, prefix)
	if ok {
		*into = v
	}
	return ok
}

func percent(s string) bool {
	n, err := strconv.Atoi(strings.TrimSuffix(s, "%"))
	return err == nil && strings.HasSuffix(s, "%") && n >= 0 && n <= 100
}

func (p *parser) mode(m string) error {
	switch m {
	case modeFile, modeExec, modeSymlink, modeGitlink:
		return nil
	}
	return p.fail("", "unsupported file mode %q", clip([]byte(m)))
}

// index parses "H..H" or "H..H MODE".
func (p *parser) index(e *entry, s string) error {
	hashes, mode, hasMode := strings.Cut(s, " ")
	o, n, found := strings.Cut(hashes, "..")
	if !found || !isHex(o) || !isHex(n) {
		return p.fail("", "bad index line %q", clip([]byte(s)))
	}
	if e.sawIndex {
		return p.fail(e.newPath, "more than one index line")
	}
	e.sawIndex = true
	if hasMode {
		return p.setMode(e, &e.oldMode, mode)
	}
	return nil
}

func isHex(s string) bool {
	if len(s) < 4 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// addPrefixed checks a name that carries git's "a/" or "b/" prefix (any
// first component, as git apply -p1 strips).
func (p *parser) addPrefixed(e *entry, name string) error {
	_, rest, found := strings.Cut(name, "/")
	if !found || strings.HasPrefix(name, "/") {
		return p.fail(name, "path has no a/ or b/ prefix")
	}
	return p.add(e, rest)
}

func (p *parser) add(e *entry, name string) error {
	if why := unsafePath(name); why != "" {
		return p.fail(name, "%s", why)
	}
	e.names = append(e.names, name)
	return nil
}

// unsafePath says why a repository-relative path is refused ("" if it is
// fine).
func unsafePath(name string) string {
	switch {
	case name == "":
		return "empty path"
	case strings.ContainsRune(name, 0):
		return "path contains a NUL byte"
	case strings.HasPrefix(name, "/"):
		return "absolute path outside the repository"
	}
	for _, c := range strings.Split(name, "/") {
		switch {
		case c == "":
			return "path has an empty component"
		case c == "." || c == "..":
			return "path leaves the repository (\".\" or \"..\" component)"
		case strings.EqualFold(c, ".git"):
			return "path inside .git"
		}
	}
	return ""
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// hunks reads the text hunks that follow "---"/"+++", keeping the new
// content when it may be a symlink's target.
func (p *parser) hunks(e *entry) error {
	for {
		l, err := p.header()
		if err != nil {
			return err
		}
		if l.eof || bytes.HasPrefix(l.text, []byte("diff --git ")) {
			p.unread(l)
			if e.hunks == 0 {
				return p.fail(e.newPath, "\"---\"/\"+++\" lines without a hunk")
			}
			return nil
		}
		oldN, newN, newStart, err := parseHunkHeader(string(l.text))
		if err != nil {
			return p.fail(e.newPath, "%v", err)
		}
		e.hunks++
		if newStart > 1 {
			e.hunkNewStartBeyond = true
		}
		if err := p.hunkBody(e, oldN, newN); err != nil {
			return err
		}
	}
}

// parseHunkHeader parses "@@ -a[,b] +c[,d] @@[ section]".
func parseHunkHeader(s string) (oldN, newN, newStart int, err error) {
	rest, ok := strings.CutPrefix(s, "@@ -")
	if !ok {
		return 0, 0, 0, fmt.Errorf("expected a hunk header, got %q", clip([]byte(s)))
	}
	old, rest, ok1 := strings.Cut(rest, " +")
	nw, _, ok2 := strings.Cut(rest, " @@")
	if !ok1 || !ok2 {
		return 0, 0, 0, fmt.Errorf("bad hunk header %q", clip([]byte(s)))
	}
	_, oldN, e1 := rangeOf(old)
	newStart, newN, e2 := rangeOf(nw)
	if e1 != nil || e2 != nil {
		return 0, 0, 0, fmt.Errorf("bad hunk header %q", clip([]byte(s)))
	}
	return oldN, newN, newStart, nil
}

func rangeOf(s string) (start, n int, err error) {
	a, b, found := strings.Cut(s, ",")
	if start, err = strconv.Atoi(a); err != nil || start < 0 {
		return 0, 0, errors.New("bad range")
	}
	n = 1
	if found {
		if n, err = strconv.Atoi(b); err != nil || n < 0 {
			return 0, 0, errors.New("bad range")
		}
	}
	if n > 1<<30 {
		return 0, 0, errors.New("bad range")
	}
	return start, n, nil
}

// hunkBody consumes exactly the lines a hunk header announced.
func (p *parser) hunkBody(e *entry, oldN, newN int) error {
	last := byte(0)
	for oldN > 0 || newN > 0 {
		l, err := p.next(maxTarget + 2)
		if err != nil {
			return err
		}
		if l.eof {
			return p.fail(e.newPath, "patch ends inside a hunk")
		}
		c := byte(' ') // git apply reads an empty line as empty context
		if len(l.text) > 0 {
			c = l.text[0]
		}
		switch c {
		case ' ':
			oldN--
			newN--
		case '-':
			oldN--
		case '+':
			newN--
		case '\\':
			if last == 0 {
				return p.fail(e.newPath, "\"\\\" line out of place")
			}
			if last != '-' {
				e.target = bytes.TrimSuffix(e.target, []byte("\n"))
			}
			continue
		default:
			return p.fail(e.newPath, "unexpected line in a hunk: %q", clip(l.text))
		}
		if oldN < 0 || newN < 0 {
			return p.fail(e.newPath, "hunk has more lines than its header says")
		}
		last = c
		if c != '-' && len(l.text) > 0 {
			if l.truncated || len(e.target)+len(l.text) > maxTarget+1 {
				e.targetBad = "content too long for a symlink target"
			} else {
				e.target = append(e.target, l.text[1:]...)
				e.target = append(e.target, '\n')
			}
		} else if c == ' ' {
			e.target = append(e.target, '\n')
		}
	}
	// "\ No newline at end of file" may follow the last line.
	l, err := p.header()
	if err != nil {
		return err
	}
	if bytes.HasPrefix(l.text, []byte("\\")) && !l.eof {
		if last != '-' {
			e.target = bytes.TrimSuffix(e.target, []byte("\n"))
		}
		return nil
	}
	p.unread(l)
	return nil
}

// binaryData consumes one or two "literal N"/"delta N" blocks of base85
// lines, each ended by an empty line.
func (p *parser) binaryData() error {
	for block := 0; ; block++ {
		l, err := p.header()
		if err != nil {
			return err
		}
		t := string(l.text)
		kind, size, found := strings.Cut(t, " ")
		if block > 0 && (l.eof || !found || (kind != "literal" && kind != "delta")) {
			p.unread(l)
			return nil
		}
		if kind != "literal" && kind != "delta" {
			return p.fail("", "expected \"literal\" or \"delta\" after \"GIT binary patch\", got %q", clip(l.text))
		}
		if n, err := strconv.ParseUint(size, 10, 63); err != nil || n > 1<<40 {
			return p.fail("", "bad binary size %q", clip([]byte(size)))
		}
		if block == 1 {
			// Second (reverse) block: the last one git writes.
			if err := p.base85Lines(); err != nil {
				return err
			}
			return nil
		}
		if err := p.base85Lines(); err != nil {
			return err
		}
	}
}

func (p *parser) base85Lines() error {
	for {
		l, err := p.header()
		if err != nil {
			return err
		}
		if l.eof {
			return p.fail("", "patch ends inside binary data")
		}
		if len(l.text) == 0 {
			return nil
		}
		if !validBase85Line(l.text) {
			return p.fail("", "bad binary data line %q", clip(l.text))
		}
	}
}

// validBase85Line checks git's base85 line: a length byte ('A'-'Z' for
// 1-26, 'a'-'z' for 27-52), then 5 characters per 4 bytes.
func validBase85Line(b []byte) bool {
	var n int
	switch c := b[0]; {
	case 'A' <= c && c <= 'Z':
		n = int(c-'A') + 1
	case 'a' <= c && c <= 'z':
		n = int(c-'a') + 27
	default:
		return false
	}
	if len(b)-1 != (n+3)/4*5 {
		return false
	}
	for _, c := range b[1:] {
		if !strings.ContainsRune(base85, rune(c)) {
			return false
		}
	}
	return true
}

const base85 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~"

// finish applies the checks that need the whole entry.
func (p *parser) finish(e *entry, named bool) error {
	if !named || e.newPath == "" && !e.deleted {
		return p.fail("", "cannot tell which file the entry changes")
	}
	if e.deleted {
		if e.newMode != "" {
			return p.fail(e.newPath, "entry both deletes and creates the file")
		}
		return nil
	}
	switch e.resultMode() {
	case "":
		// Without a mode git apply keeps the file's current one: an
		// existing symlink (or a renamed one) would get a target nobody
		// checked. git diff always gives a mode ("index H..H MODE" when
		// it is unchanged), so a patch without one is not git's.
		return p.fail(e.newPath, "the patch does not give the file's mode: cannot rule out a symlink")
	case modeSymlink:
		return p.symlink(e)
	}
	return nil
}

// symlink checks an entry whose result is a symlink.
func (p *parser) symlink(e *entry) error {
	link := e.newPath
	p.sum.Symlinks++
	switch {
	case e.binary:
		return p.fail(link, "symlink given as binary data: its target cannot be checked")
	case e.hunks == 0:
		return p.fail(link, "symlink whose target is not in the patch: it cannot be checked")
	case e.hunks > 1 || e.hunkNewStartBeyond:
		return p.fail(link, "symlink target split over hunks")
	case e.targetBad != "":
		return p.fail(link, "%s", e.targetBad)
	}
	target := string(e.target)
	if why := escapes(link, target); why != "" {
		return p.fail(link, "symlink to %q %s", target, why)
	}
	return nil
}

// escapes says why a symlink at link (repository-relative) pointing to
// target is refused ("" when it stays inside the repository).
//
// Judging the target by itself with path.Clean is not enough: with
// "a/x -> .." a second link "a/y -> x/.." looks like it stays at "a",
// but the kernel resolves x first and y lands in the repository's parent.
// So the raw target may hold ".." (and ".") only as leading components,
// and those may not climb above the repository root from the link's
// directory. That is sound because:
//   - the link's directory has no symlink in it: path checks keep it
//     free of "." and "..", and git apply refuses to write any path
//     "beyond a symbolic link", whether the link is in the work tree or
//     created by the same patch;
//   - so every ".." is applied to the link's real directory, never after
//     traversing another symlink, and the leading part of the target
//     names a real directory inside the repository;
//   - the rest only descends by plain names; a symlink met there either
//     was created or changed by this patch, and is then itself checked by
//     this rule to stay inside, or was already in the repository.
func escapes(link, target string) string {
	switch {
	case target == "":
		return "is empty"
	case strings.ContainsFunc(target, isControl):
		return "contains control characters"
	case strings.HasPrefix(target, "/"):
		return "points outside the repository (absolute)"
	}
	named := false
	for _, c := range strings.Split(target, "/") {
		switch {
		case c == "":
			return "has an empty component (\"//\" or a trailing \"/\")"
		case c == "." || c == "..":
			if named {
				return "has \".\" or \"..\" after a name: it could climb out through another symlink"
			}
		default:
			named = true
		}
	}
	resolved := path.Clean(path.Join(path.Dir(link), target))
	if resolved == ".." || strings.HasPrefix(resolved, "../") {
		return "points outside the repository"
	}
	for _, c := range strings.Split(resolved, "/") {
		if strings.EqualFold(c, ".git") {
			return "points into .git"
		}
	}
	return ""
}

// splitGitHeader splits the names of a "diff --git" line. ok is false
// when unquoted names with spaces make the split ambiguous (a rename of
// such a path): the rename/copy or ---/+++ lines must name the files then.
func splitGitHeader(s string) (a, b string, ok bool, err error) {
	if strings.HasPrefix(s, `"`) {
		end := quotedEnd(s)
		if end < 0 {
			return "", "", false, errors.New("unterminated quoted name")
		}
		if a, err = unquote(s[:end]); err != nil {
			return "", "", false, err
		}
		rest, found := strings.CutPrefix(s[end:], " ")
		if !found {
			return "", "", false, errors.New("missing second name")
		}
		if b, err = unquote(rest); err != nil {
			return "", "", false, err
		}
		return a, b, true, nil
	}
	if i := strings.Index(s, ` "`); i >= 0 {
		if b, err = unquote(s[i+1:]); err != nil {
			return "", "", false, err
		}
		return s[:i], b, true, nil
	}
	// Unquoted: the names are the same path with different prefixes,
	// unless this is a rename.
	for i := 0; i < len(s); i++ {
		if s[i] != ' ' {
			continue
		}
		x, y := s[:i], s[i+1:]
		_, xs, f1 := strings.Cut(x, "/")
		_, ys, f2 := strings.Cut(y, "/")
		if f1 && f2 && xs == ys {
			return x, y, true, nil
		}
	}
	if strings.Count(s, " ") == 1 {
		x, y, _ := strings.Cut(s, " ")
		return x, y, true, nil
	}
	return "", "", false, nil
}

// lineName decodes the name of a "---" or "+++" line. git ends such a
// name with a tab when it has spaces (and git apply stops at the first
// tab), so one trailing tab is allowed and nothing after it.
func lineName(s string) (string, error) {
	end := len(s)
	if strings.HasPrefix(s, `"`) {
		end = quotedEnd(s)
	} else if i := strings.IndexByte(s, '\t'); i >= 0 {
		end = i
	}
	if end < 0 || (s[end:] != "" && s[end:] != "\t") {
		return "", fmt.Errorf("bad name %q", clip([]byte(s)))
	}
	return unquote(s[:end])
}

// quotedEnd returns the index just past the closing quote of the C-quoted
// string at the start of s, or -1.
func quotedEnd(s string) int {
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return -1
}

// unquote decodes a name as git writes it: raw, or C-quoted with \a \b \t
// \n \v \f \r \" \\ and \ooo octal escapes.
func unquote(s string) (string, error) {
	if !strings.HasPrefix(s, `"`) {
		// git quotes names with control characters; a raw one would be
		// cut short by git apply.
		if strings.ContainsFunc(s, isControl) {
			return "", fmt.Errorf("unquoted name %q has control characters", s)
		}
		return s, nil
	}
	if quotedEnd(s) != len(s) {
		return "", fmt.Errorf("bad quoted name %q", clip([]byte(s)))
	}
	var out []byte
	for i := 1; i < len(s)-1; i++ {
		c := s[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		i++
		if i >= len(s)-1 {
			return "", fmt.Errorf("bad escape in %q", clip([]byte(s)))
		}
		switch c = s[i]; c {
		case 'a':
			out = append(out, '\a')
		case 'b':
			out = append(out, '\b')
		case 't':
			out = append(out, '\t')
		case 'n':
			out = append(out, '\n')
		case 'v':
			out = append(out, '\v')
		case 'f':
			out = append(out, '\f')
		case 'r':
			out = append(out, '\r')
		case '"', '\\':
			out = append(out, c)
		case '0', '1', '2', '3':
			if i+2 >= len(s)-1 || !isOctal(s[i+1]) || !isOctal(s[i+2]) {
				return "", fmt.Errorf("bad octal escape in %q", clip([]byte(s)))
			}
			out = append(out, (c-'0')<<6|(s[i+1]-'0')<<3|(s[i+2]-'0'))
			i += 2
		default:
			return "", fmt.Errorf("bad escape in %q", clip([]byte(s)))
		}
	}
	return string(out), nil
}

func isOctal(c byte) bool { return '0' <= c && c <= '7' }

// clip shortens what an error quotes.
func clip(b []byte) string {
	if len(b) > 80 {
		return string(b[:80]) + "..."
	}
	return string(b)
}
