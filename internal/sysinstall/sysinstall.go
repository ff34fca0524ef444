// Package sysinstall sets banger up as two systemd services ("banger system
// install") and takes them down again ("banger system uninstall"):
//
//   - banger-helper.service runs banger-helper as root, with only the
//     capabilities its network work needs (bridge, taps, NAT rules, DNS
//     sockets), serving the owner's daemon on /run/banger/helper.sock;
//   - bangerd.service runs bangerd as the user who owns banger, with its API
//     and VM sockets under /run/bangerd and its state and config in that
//     user's XDG directories.
//
// Neither service kills running VMs when stopped or restarted (KillMode=process,
// SendSIGKILL=no): the QEMU processes stay in bangerd's cgroup and the next
// daemon re-adopts them.
//
// Everything is planned first (PlanInstall, PlanUninstall), which renders every
// file and checks the inputs without writing anything, so the plan can be shown
// to the user (Plan.Describe) before Apply carries it out. Apply writes files
// atomically and undoes its own changes when a step fails. Options.Root lets
// tests (or image builders) work on a directory instead of the real system.
//
// Install metadata goes to /etc/banger/install.json (ReadMetadata): the CLI
// reads it to find the daemon's socket.
package sysinstall

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"banger/internal/paths"
	"banger/internal/privhelper"
)

// Names and paths of an installation, as seen on the target system.
const (
	HelperUnit       = "banger-helper.service"
	DaemonUnit       = "bangerd.service"
	DefaultBinDir    = "/usr/local/bin"
	UnitDir          = "/etc/systemd/system"
	EtcDir           = "/etc/banger"
	MetadataPath     = paths.InstallMetadataFile // what the CLI reads to find the service
	HelperRuntimeDir = "/run/banger"             // the helper's RuntimeDirectory
	HelperSocket     = privhelper.DefaultSocket
	DaemonRuntimeDir = "/run/bangerd" // the daemon's RuntimeDirectory (BANGER_RUNTIME_DIR)
	// VarLibDir is not used by this version; purge removes it if present.
	VarLibDir = "/var/lib/banger"
)

// binaries are the programs an installation copies into the bin dir.
func binaries() []string { return []string{"banger", "bangerd", "banger-agent", "banger-helper"} }

// unitNames are the services, the helper first (the order of starts).
func unitNames() []string { return []string{HelperUnit, DaemonUnit} }

// ErrUnknownUser is wrapped by Users.LookupUser errors for a user that does
// not exist.
var ErrUnknownUser = errors.New("no such user")

// Account is the user who owns a banger installation: bangerd runs as that
// user and banger-helper serves only that user.
type Account struct {
	Name  string
	UID   int
	GID   int
	Group string // name of the primary group; "" when unknown (units then use GID)
	Home  string
}

// StateDir is the owner's banger state directory (XDG_STATE_HOME/banger).
func (a Account) StateDir() string { return filepath.Join(a.Home, ".local", "state", "banger") }

// ConfigDir is the owner's banger config directory (XDG_CONFIG_HOME/banger).
func (a Account) ConfigDir() string { return filepath.Join(a.Home, ".config", "banger") }

// Users looks up accounts and groups. SystemUsers reads the system's user
// database; tests fake it.
type Users interface {
	// LookupUser finds a user by name, or by uid when given digits only.
	// An unknown user is an error wrapping ErrUnknownUser.
	LookupUser(nameOrUID string) (Account, error)
	// HasGroup says whether a group exists.
	HasGroup(name string) (bool, error)
}

// SystemUsers implements Users with package os/user.
type SystemUsers struct{}

// LookupUser implements Users.
func (SystemUsers) LookupUser(nameOrUID string) (Account, error) {
	var u *user.User
	var err error
	if isDigits(nameOrUID) {
		u, err = user.LookupId(nameOrUID)
	} else {
		u, err = user.Lookup(nameOrUID)
	}
	var unknownName user.UnknownUserError
	var unknownID user.UnknownUserIdError
	switch {
	case errors.As(err, &unknownName), errors.As(err, &unknownID):
		return Account{}, fmt.Errorf("%w: %v", ErrUnknownUser, err)
	case err != nil:
		return Account{}, err
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return Account{}, fmt.Errorf("user %s: uid %q is not a number", u.Username, u.Uid)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return Account{}, fmt.Errorf("user %s: gid %q is not a number", u.Username, u.Gid)
	}
	a := Account{Name: u.Username, UID: uid, GID: gid, Home: u.HomeDir}
	if g, err := user.LookupGroupId(u.Gid); err == nil {
		a.Group = g.Name
	}
	return a, nil
}

// HasGroup implements Users.
func (SystemUsers) HasGroup(name string) (bool, error) {
	_, err := user.LookupGroup(name)
	var unknown user.UnknownGroupError
	switch {
	case errors.As(err, &unknown):
		return false, nil
	case err != nil:
		return false, err
	}
	return true, nil
}

// Options configure planning and applying. Zero values mean the defaults,
// which describe the real system.
type Options struct {
	// Root is the file system to install into: "" or "/" is the real
	// system; tests pass a temporary directory and everything is read and
	// written under it. Unit files and metadata still name the paths as
	// seen from inside Root.
	Root string
	// BinDir is where the binaries are installed (default /usr/local/bin).
	BinDir string
	// SourceDir holds the binaries to install (default: the directory of
	// the running executable). It is a path on the running system, not
	// under Root.
	SourceDir string
	// Owner names the user (or uid) who owns the installation. Empty means
	// $SUDO_USER when running as root (refused when that is unset: root
	// must name the owner), else the calling user.
	Owner string
	// Version is recorded in the metadata and the unit files' header.
	Version string
	// Systemctl runs systemctl (default: HostSystemctl for the real root;
	// required for any other Root).
	Systemctl Systemctl
	// Users looks up the owner and the kvm group (default SystemUsers).
	Users Users
	// Getenv, Geteuid and Now default to os.Getenv, os.Geteuid and
	// time.Now.
	Getenv  func(string) string
	Geteuid func() int
	Now     func() time.Time
}

// withDefaults fills the zero fields and checks Root and BinDir.
func (o Options) withDefaults() (Options, error) {
	if o.Root == "" {
		o.Root = "/"
	}
	if !filepath.IsAbs(o.Root) {
		return o, fmt.Errorf("root %q is not an absolute path", o.Root)
	}
	o.Root = filepath.Clean(o.Root)
	if o.BinDir == "" {
		o.BinDir = DefaultBinDir
	}
	if err := checkUnitPath("bin dir", o.BinDir); err != nil {
		return o, err
	}
	if o.Users == nil {
		o.Users = SystemUsers{}
	}
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.Geteuid == nil {
		o.Geteuid = os.Geteuid
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Systemctl == nil && o.Root == "/" {
		o.Systemctl = HostSystemctl{}
	}
	if strings.ContainsFunc(o.Version, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return o, fmt.Errorf("version %q contains control characters", o.Version)
	}
	return o, nil
}

// under is path p (as seen on the target system) in o.Root.
func under(root, p string) string { return filepath.Join(root, p) }

// ResolveOwner finds the user who owns the installation: Options.Owner when
// set, else $SUDO_USER when running as root, else the calling user. Root
// itself cannot be the owner, and root must say who is (through sudo or
// Options.Owner). The owner's home must exist under Options.Root.
func ResolveOwner(o Options) (Account, error) {
	o, err := o.withDefaults()
	if err != nil {
		return Account{}, err
	}
	return resolveOwner(o)
}

func resolveOwner(o Options) (Account, error) {
	name := o.Owner
	if name == "" {
		euid := o.Geteuid()
		if euid != 0 {
			name = strconv.Itoa(euid)
		} else if sudo := o.Getenv("SUDO_USER"); sudo != "" && sudo != "root" {
			name = sudo
		} else {
			return Account{}, errors.New("running as root without an owner: name the user whose VMs these are with --owner NAME (or run the command with sudo from that user's account)")
		}
	}
	a, err := o.Users.LookupUser(name)
	switch {
	case errors.Is(err, ErrUnknownUser):
		return Account{}, fmt.Errorf("unknown owner %q: %w", name, err)
	case err != nil:
		return Account{}, fmt.Errorf("look up owner %q: %w", name, err)
	}
	if a.UID == 0 {
		return Account{}, fmt.Errorf("owner %q is root: bangerd runs as an unprivileged user, banger-helper does the privileged part for it; name another user with --owner", a.Name)
	}
	if a.UID < 0 || a.GID < 0 {
		return Account{}, fmt.Errorf("owner %q: bad uid %d or gid %d", a.Name, a.UID, a.GID)
	}
	if !validName(a.Name) {
		return Account{}, fmt.Errorf("owner name %q cannot be used in a unit file's User=", a.Name)
	}
	if a.Group != "" && !validName(a.Group) {
		a.Group = "" // Group= then takes the gid
	}
	if err := checkUnitPath("owner's home", a.Home); err != nil {
		return Account{}, err
	}
	if a.Home == "/" {
		return Account{}, fmt.Errorf("owner %q has / as home: banger needs a real home directory for its state", a.Name)
	}
	fi, err := os.Stat(under(o.Root, a.Home))
	if err != nil {
		return Account{}, fmt.Errorf("owner %q: home %s: %w", a.Name, a.Home, err)
	}
	if !fi.IsDir() {
		return Account{}, fmt.Errorf("owner %q: home %s is not a directory", a.Name, a.Home)
	}
	return a, nil
}

// validName accepts the user and group names systemd accepts in User= and
// Group= (its relaxed rules, without the characters that would need
// quoting).
func validName(s string) bool {
	if s == "" || len(s) > 256 || isDigits(s) {
		return false
	}
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r == '_':
		case i > 0 && (r >= '0' && r <= '9' || r == '-' || r == '.'):
		default:
			return false
		}
	}
	return true
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// checkUnitPath accepts clean absolute paths made of characters that need
// no quoting or escaping in a unit file (no spaces, quotes, backslashes, %
// specifiers or $ variables).
func checkUnitPath(what, p string) error {
	if !filepath.IsAbs(p) || filepath.Clean(p) != p {
		return fmt.Errorf("%s %q is not a clean absolute path", what, p)
	}
	for _, r := range p {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case strings.ContainsRune("/._-+@", r):
		default:
			return fmt.Errorf("%s %q has a character (%q) that cannot be written into a unit file unquoted; only letters, digits and / . _ - + @ are accepted", what, p, r)
		}
	}
	return nil
}
