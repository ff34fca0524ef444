// Package hosttools finds and runs the host programs banger executes
// (mkfs.ext4, debugfs, qemu-img, QEMU, git, ssh, ...). The daemon, the
// CLI and doctor all look tools up here, so they agree on what is
// installed.
//
// A tool is searched on PATH and then in the sbin directories, which
// Debian leaves off an ordinary user's PATH although e2fsprogs installs
// mkfs.ext4 and debugfs there. A tool that is really missing is reported
// with the Debian package that provides it. A failed run is reported with
// the tail of what the tool printed, and only when it printed something.
package hosttools

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
)

// Tool is one external program banger runs on the host.
type Tool struct {
	// Name is the file name looked up, e.g. "mkfs.ext4".
	Name string
	// Package is the Debian package that installs it ("" when Debian has
	// none; Hint then says where to get it).
	Package string
	// Hint says how to get a tool no Debian package provides.
	Hint string
	// Purpose is what banger runs it for.
	Purpose string
}

// Install says how to install the tool: "install Debian package X", or
// the hint.
func (t Tool) Install() string {
	if t.Package != "" {
		return "install Debian package " + t.Package
	}
	return t.Hint
}

// Names of the tools in the table, for callers.
const (
	MkfsExt4    = "mkfs.ext4"
	Debugfs     = "debugfs"
	QEMUImg     = "qemu-img"
	QEMU        = "qemu-system-x86_64"
	Debootstrap = "debootstrap"
	Git         = "git"
	SSH         = "ssh"
	Systemctl   = "systemctl"
	Sudo        = "sudo"
	Firecracker = "firecracker"
	Jailer      = "jailer"
)

const firecrackerHint = "download a release from https://github.com/firecracker-microvm/firecracker/releases"

// tools is every external program banger runs on the host (banger's own
// binaries aside). Read-only.
var tools = []Tool{
	{Name: MkfsExt4, Package: "e2fsprogs", Purpose: "formats work disks and images"},
	{Name: Debugfs, Package: "e2fsprogs", Purpose: "writes ownership and special files into images pulled from registries"},
	{Name: QEMUImg, Package: "qemu-utils", Purpose: "creates copy-on-write root disks and flattens built images"},
	{Name: QEMU, Package: "qemu-system-x86", Purpose: "runs the VMs"},
	{Name: Debootstrap, Package: "debootstrap", Purpose: "builds Debian images (image build --debootstrap)"},
	{Name: Git, Package: "git", Purpose: "reads the repositories shipped into workspaces"},
	{Name: SSH, Package: "openssh-client", Purpose: "vm ssh"},
	{Name: Systemctl, Package: "systemd", Purpose: "installs and manages banger's services"},
	{Name: Sudo, Package: "sudo", Purpose: "asks for root in system install"},
	{Name: Firecracker, Hint: firecrackerHint, Purpose: "runs VMs with --engine firecracker"},
	{Name: Jailer, Hint: firecrackerHint, Purpose: "jails Firecracker"},
}

// Tools returns the table of every external program banger runs.
func Tools() []Tool { return append([]Tool(nil), tools...) }

// Lookup returns the table's entry for the tool file name.
func Lookup(name string) (Tool, bool) {
	for _, t := range tools {
		if t.Name == name {
			return t, true
		}
	}
	return Tool{}, false
}

// SbinDirs are the directories searched after PATH by default.
func SbinDirs() []string { return []string{"/usr/local/sbin", "/usr/sbin", "/sbin"} }

// NotFoundError says that a tool is neither on PATH nor in the extra
// directories. It matches exec.ErrNotFound with errors.Is.
type NotFoundError struct {
	Name string
}

func (e *NotFoundError) Error() string {
	// A configured path (with a slash) gets no package advice: the
	// package would not put the tool there.
	if t, ok := Lookup(e.Name); ok {
		return fmt.Sprintf("%s not found (%s)", e.Name, t.Install())
	}
	return e.Name + " not found"
}

// Unwrap lets errors.Is(err, exec.ErrNotFound) hold.
func (e *NotFoundError) Unwrap() error { return exec.ErrNotFound }

// Finder looks tools up. The zero value searches PATH, then SbinDirs.
type Finder struct {
	// Extra is searched after PATH; nil means SbinDirs.
	Extra []string
}

// Path returns the path of the tool name: name itself when it contains a
// slash (and is executable), else the first match on PATH, else in the
// extra directories.
func (f Finder) Path(name string) (string, error) {
	if name == "" {
		return "", errors.New("empty tool name")
	}
	if strings.Contains(name, "/") {
		if _, err := exec.LookPath(name); err != nil {
			return "", &NotFoundError{Name: name}
		}
		return name, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	extra := f.Extra
	if extra == nil {
		extra = SbinDirs()
	}
	for _, d := range extra {
		if p, err := exec.LookPath(filepath.Join(d, name)); err == nil {
			return p, nil
		}
	}
	return "", &NotFoundError{Name: name}
}

// Command returns a command running the tool name with args, found as
// Path finds it.
func (f Finder) Command(ctx context.Context, name string, args ...string) (*exec.Cmd, error) {
	p, err := f.Path(name)
	if err != nil {
		return nil, err
	}
	return exec.CommandContext(ctx, p, args...), nil
}

// Run runs the tool name with args and returns its combined output. A
// failure is reported as by OutputError.
func (f Finder) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd, err := f.Command(ctx, name, args...)
	if err != nil {
		return nil, err
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ctx.Err() != nil {
			return out, fmt.Errorf("%s: %w", name, ctx.Err())
		}
		return out, OutputError(name, err, out)
	}
	return out, nil
}

// Path finds a tool with the default Finder.
func Path(name string) (string, error) { return Finder{}.Path(name) }

// Command makes a command with the default Finder.
func Command(ctx context.Context, name string, args ...string) (*exec.Cmd, error) {
	return Finder{}.Command(ctx, name, args...)
}

// Run runs a tool with the default Finder.
func Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	return Finder{}.Run(ctx, name, args...)
}

// maxTail bounds the output kept in an error.
const maxTail = 2000

// OutputError is the error for a failed run of the tool name: "name: err"
// followed by ": " and the tail of output (trimmed, at most maxTail
// bytes) only when the tool printed something. It wraps err.
func OutputError(name string, err error, output []byte) error {
	if err == nil {
		return nil
	}
	if t := Tail(output); t != "" {
		return fmt.Errorf("%s: %w: %s", name, err, t)
	}
	return fmt.Errorf("%s: %w", name, err)
}

// Tail is output trimmed of surrounding white space, cut to its last
// maxTail bytes.
func Tail(output []byte) string {
	t := bytes.TrimSpace(output)
	if len(t) > maxTail {
		t = append([]byte("..."), bytes.TrimLeft(t[len(t)-maxTail:], "\n")...)
	}
	return strings.ToValidUTF8(string(t), "?")
}
