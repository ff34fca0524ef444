package sysinstall

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"banger/internal/config"
)

// Plan kinds.
const (
	KindInstall   = "install"
	KindUninstall = "uninstall"
	KindPurge     = "purge"
)

// PlannedDir is a directory Apply creates (it is missing when planned).
type PlannedDir struct {
	Path string // on the target system, under Plan.Root
	Mode fs.FileMode
	UID  int // owner given to the directory; -1 leaves it to the installing user (root)
	GID  int
	Why  string
}

// PlannedFile is a file Apply writes (atomically: a temporary file renamed
// over the target).
type PlannedFile struct {
	Path    string // on the target system, under Plan.Root
	Mode    fs.FileMode
	Content []byte // the file's content, or nil when copied from Source
	Source  string // the file copied, on the running system
	Why     string
}

// PlannedRemoval is a file or directory tree Apply removes.
type PlannedRemoval struct {
	Path string // on the target system, under Plan.Root
	Dir  bool   // a directory, removed with everything in it
	Why  string
}

// Command is one systemctl invocation.
type Command struct {
	Args []string // systemctl's arguments
	Why  string
}

// String is the command as typed in a shell.
func (c Command) String() string { return "systemctl " + strings.Join(c.Args, " ") }

// Plan is everything an install or uninstall does, in order: the Before
// commands, then Dirs, Files and Removals, then Commands.
type Plan struct {
	Kind        string // KindInstall, KindUninstall or KindPurge
	Root        string // the file system it applies to ("/" for the real one)
	Owner       Account
	Before      []Command // run before any file is touched
	Dirs        []PlannedDir
	Files       []PlannedFile
	Removals    []PlannedRemoval
	Commands    []Command // run once the files are in place (or gone)
	NeedsRoot   bool      // applying it to the real system needs root
	Explanation []string  // what it does and why, in plain words
}

// Empty says whether the plan has nothing to do.
func (p *Plan) Empty() bool {
	return len(p.Before) == 0 && len(p.Dirs) == 0 && len(p.Files) == 0 && len(p.Removals) == 0 && len(p.Commands) == 0
}

// PlanInstall renders and checks everything an install writes and runs,
// without changing anything: the owner must exist and have a home, the four
// binaries must be in SourceDir, and (on the real system) the bin dir must
// be writable by root only, since root runs banger-helper from it.
func PlanInstall(o Options) (*Plan, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("plan install: %w", err)
	}
	owner, err := resolveOwner(o)
	if err != nil {
		return nil, fmt.Errorf("plan install: %w", err)
	}
	src, err := sourceDir(o)
	if err != nil {
		return nil, fmt.Errorf("plan install: %w", err)
	}
	if err := checkBinaries(src); err != nil {
		return nil, fmt.Errorf("plan install: %w", err)
	}
	if o.Root == "/" {
		if err := checkRootOnly(o.BinDir); err != nil {
			return nil, fmt.Errorf("plan install: %w", err)
		}
	}
	// The helper serves the network the owner's config describes: the
	// file, not the installing shell's BANGER_* overrides, which the
	// services never see.
	cfg, err := config.LoadFile(filepath.Join(o.Root, owner.ConfigDir(), "config.toml"))
	if err != nil {
		return nil, fmt.Errorf("plan install: the owner's config: %w", err)
	}
	meta := newMetadata(o, owner, cfg)
	units, err := RenderUnits(o, meta)
	if err != nil {
		return nil, fmt.Errorf("plan install: %w", err)
	}
	metaFile, err := meta.encode()
	if err != nil {
		return nil, fmt.Errorf("plan install: %w", err)
	}
	kvm, err := o.Users.HasGroup("kvm")
	if err != nil {
		return nil, fmt.Errorf("plan install: look up group kvm: %w", err)
	}

	p := &Plan{Kind: KindInstall, Root: o.Root, Owner: owner, NeedsRoot: true}
	p.Before = []Command{checkCommand()}

	rootDir := func(path, why string) PlannedDir {
		return PlannedDir{Path: path, Mode: 0o755, UID: -1, GID: -1, Why: why}
	}
	ownerDir := func(path, why string) PlannedDir {
		return PlannedDir{Path: path, Mode: 0o700, UID: owner.UID, GID: owner.GID, Why: why}
	}
	for _, d := range []PlannedDir{
		rootDir(o.BinDir, "where the binaries go"),
		rootDir(UnitDir, "systemd's directory for the machine's own units"),
		rootDir(EtcDir, "banger's system-wide directory, for the install metadata"),
		ownerDir(owner.StateDir(), "banger's state (store, images, VM disks): the daemon may write only there and in the config dir, so both must exist"),
		ownerDir(owner.ConfigDir(), "banger's config dir (config.toml, ssh keys), writable by the daemon"),
	} {
		missing, err := missingDirs(o.Root, d)
		if err != nil {
			return nil, fmt.Errorf("plan install: %w", err)
		}
		for _, m := range missing {
			if !slices.ContainsFunc(p.Dirs, func(d PlannedDir) bool { return d.Path == m.Path }) {
				p.Dirs = append(p.Dirs, m)
			}
		}
	}

	why := map[string]string{
		"banger":        "the CLI",
		"bangerd":       "the daemon, run by " + DaemonUnit,
		"banger-agent":  "the guest agent, which bangerd looks for next to itself and puts into VM images",
		"banger-helper": "the privileged helper, run as root by " + HelperUnit,
	}
	for _, b := range binaries() {
		p.Files = append(p.Files, PlannedFile{
			Path: filepath.Join(o.BinDir, b), Mode: 0o755, Source: filepath.Join(src, b), Why: why[b],
		})
	}
	p.Files = append(p.Files,
		PlannedFile{Path: filepath.Join(UnitDir, HelperUnit), Mode: 0o644, Content: units[HelperUnit],
			Why: fmt.Sprintf("runs banger-helper as root, limited to network work, serving only uid %d on %s", owner.UID, HelperSocket)},
		PlannedFile{Path: filepath.Join(UnitDir, DaemonUnit), Mode: 0o644, Content: units[DaemonUnit],
			Why: fmt.Sprintf("runs bangerd as %s, able to write only to its state and config dirs and %s", owner.Name, DaemonRuntimeDir)},
		PlannedFile{Path: MetadataPath, Mode: 0o644, Content: metaFile,
			Why: "records the owner and paths; the CLI reads it to find the daemon's socket " + meta.DaemonSocket()},
	)

	both := []string{HelperUnit, DaemonUnit}
	p.Commands = []Command{
		{Args: []string{"daemon-reload"}, Why: "make systemd read the new unit files"},
		{Args: append([]string{"enable"}, both...), Why: "start both services at boot"},
		{Args: append([]string{"restart"}, both...), Why: "start them now (restart, so that a re-install runs the new binaries; running VMs are not affected)"},
	}

	p.Explanation = []string{
		fmt.Sprintf("banger will run as two systemd services, started at boot. %s runs banger-helper as root, allowed to do only network work (bridge, taps, NAT rules, DNS on the bridge) and only for %s (uid %d), on %s.",
			HelperUnit, owner.Name, owner.UID, HelperSocket),
		fmt.Sprintf("%s runs bangerd as %s, with its socket at %s and its state in %s; apart from these it may write only to %s, never to ~/.ssh.",
			DaemonUnit, owner.Name, meta.DaemonSocket(), owner.StateDir(), owner.ConfigDir()),
		"Stopping, restarting or upgrading either service leaves running VMs alone: the next daemon takes them over.",
		fmt.Sprintf("Nothing of yours is changed: %s and ~/.ssh stay as they are.", filepath.Join(owner.ConfigDir(), "config.toml")),
	}
	if kvm {
		p.Explanation = append(p.Explanation, "bangerd gets the kvm group, to open /dev/kvm.")
	} else {
		p.Explanation = append(p.Explanation, fmt.Sprintf("There is no kvm group on this machine: VMs get KVM only if /dev/kvm is open to %s; otherwise they are emulated (slow).", owner.Name))
	}
	if prev, err := ReadMetadata(o.Root); err == nil {
		if prev.Owner != owner.Name {
			p.Explanation = append(p.Explanation, fmt.Sprintf("This replaces the installation for %s: their banger state (%s) stays where it is, unused.", prev.Owner, prev.StateDir))
		}
		if prev.BinDir != o.BinDir {
			p.Explanation = append(p.Explanation, fmt.Sprintf("The previous installation's binaries stay in %s: remove them by hand.", prev.BinDir))
		}
	}
	p.Explanation = append(p.Explanation,
		"If you started bangerd yourself (banger starts it on demand), stop it first with \"banger daemon stop\": two daemons must not share one state directory.",
		fmt.Sprintf("Root is needed to write %s, %s and %s and to run systemctl; once installed, only banger-helper keeps root, for what bangerd cannot do itself: creating the bridge and the taps and the firewall (nftables) rules.",
			o.BinDir, UnitDir, EtcDir),
	)
	return p, nil
}

// checkCommand asks systemd for its version: it fails, before anything is
// touched, when systemd is not running.
func checkCommand() Command {
	return Command{Args: []string{"show", "--property=Version"}, Why: "check that systemd runs and answers, before anything is changed"}
}

// sourceDir is Options.SourceDir or the running executable's directory.
func sourceDir(o Options) (string, error) {
	if o.SourceDir != "" {
		return filepath.Abs(o.SourceDir)
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find the binaries to install: %w", err)
	}
	if r, err := filepath.EvalSymlinks(exe); err == nil {
		exe = r
	}
	return filepath.Dir(exe), nil
}

// checkBinaries requires the four binaries, executable, in dir.
func checkBinaries(dir string) error {
	var missing []string
	for _, b := range binaries() {
		fi, err := os.Stat(filepath.Join(dir, b))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			missing = append(missing, b)
		case err != nil:
			return fmt.Errorf("binary to install: %w", err)
		case !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0:
			return fmt.Errorf("binary to install %s is not an executable file", filepath.Join(dir, b))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("binaries to install missing from %s: %s (build them with make build, or give the directory that has them)", dir, strings.Join(missing, ", "))
	}
	return nil
}

// checkRootOnly refuses a directory (or an existing ancestor) that someone
// other than root owns or may write: root runs banger-helper from it.
func checkRootOnly(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return err
		default:
			st, ok := fi.Sys().(*syscall.Stat_t)
			if ok && st.Uid != 0 {
				return fmt.Errorf("bin dir %s: %s is owned by uid %d; root runs banger-helper from there, so it must be owned by root", dir, d, st.Uid)
			}
			if fi.Mode().Perm()&0o022 != 0 && fi.Mode()&fs.ModeSticky == 0 {
				return fmt.Errorf("bin dir %s: %s is writable by group or others (mode %v); root runs banger-helper from there", dir, d, fi.Mode().Perm())
			}
			if fi.Mode()&fs.ModeSticky != 0 {
				return fmt.Errorf("bin dir %s: %s is a shared (sticky) directory; root runs banger-helper from there", dir, d)
			}
		}
		if d == "/" {
			return nil
		}
	}
}

// missingDirs lists d and its missing ancestors, topmost first, each with
// d's mode and owner; nothing when d exists.
func missingDirs(root string, d PlannedDir) ([]PlannedDir, error) {
	var out []PlannedDir
	for p := d.Path; p != "/"; p = filepath.Dir(p) {
		fi, err := os.Stat(under(root, p))
		if err == nil {
			if !fi.IsDir() {
				return nil, fmt.Errorf("%s is not a directory", p)
			}
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		m := d
		m.Path = p
		if p != d.Path {
			m.Why = "parent of " + d.Path
		}
		out = append([]PlannedDir{m}, out...)
	}
	return out, nil
}

// PlanUninstall plans the removal of an installation: stop and disable the
// services, remove the unit files, the binaries and /etc/banger. With purge
// it also removes the runtime directories, /var/lib/banger and the owner's
// banger state (~/.local/state/banger: images, VM disks). It never removes
// ~/.ssh or anything under ~/.config/banger (config.toml, ssh keys).
// Only what exists is planned, so uninstalling twice is harmless.
func PlanUninstall(o Options, purge bool) (*Plan, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("plan uninstall: %w", err)
	}
	p := &Plan{Kind: KindUninstall, Root: o.Root, NeedsRoot: true}
	if purge {
		p.Kind = KindPurge
	}
	meta, err := ReadMetadata(o.Root)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		meta = nil
	case err != nil:
		p.Explanation = append(p.Explanation, fmt.Sprintf("The install metadata is unreadable (%v): removing what is found at the default places.", err))
		meta = nil
	}
	binDir := o.BinDir
	var owner *Account
	if meta != nil {
		binDir = meta.BinDir
		a := meta.owner()
		owner = &a
	}
	if err := checkUnitPath("bin dir", binDir); err != nil {
		return nil, fmt.Errorf("plan uninstall: %w", err)
	}

	exists := func(path string) (fs.FileInfo, bool, error) {
		fi, err := os.Lstat(under(o.Root, path))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, false, nil
		}
		return fi, err == nil, err
	}
	add := func(path, why string) error {
		fi, ok, err := exists(path)
		if err != nil {
			return fmt.Errorf("plan uninstall: %w", err)
		}
		if ok {
			p.Removals = append(p.Removals, PlannedRemoval{Path: path, Dir: fi.IsDir(), Why: why})
		}
		return nil
	}

	var units []string
	for _, u := range []string{DaemonUnit, HelperUnit} {
		_, ok, err := exists(filepath.Join(UnitDir, u))
		if err != nil {
			return nil, fmt.Errorf("plan uninstall: %w", err)
		}
		if ok {
			units = append(units, u)
		}
	}
	installed := meta != nil || len(units) > 0
	if len(units) > 0 {
		p.Before = []Command{checkCommand(),
			{Args: append([]string{"disable", "--now"}, units...), Why: "stop the services and no longer start them at boot (running VMs are not stopped)"}}
	}
	for _, u := range units {
		if err := add(filepath.Join(UnitDir, u), "the service's unit file"); err != nil {
			return nil, err
		}
	}
	if installed {
		for _, b := range binaries() {
			if err := add(filepath.Join(binDir, b), "installed binary"); err != nil {
				return nil, err
			}
		}
	}
	if err := add(EtcDir, "banger's system-wide directory (install metadata)"); err != nil {
		return nil, err
	}

	if purge {
		for _, d := range []struct{ path, why string }{
			{HelperRuntimeDir, "the helper's runtime directory (its socket)"},
			{DaemonRuntimeDir, "the daemon's runtime directory (its socket, the VMs' sockets)"},
			{VarLibDir, "system-wide banger state"},
		} {
			if err := add(d.path, d.why); err != nil {
				return nil, err
			}
		}
		if owner == nil {
			if a, err := resolveOwner(o); err == nil {
				owner = &a
			} else {
				p.Explanation = append(p.Explanation, fmt.Sprintf("No user's banger state is removed: the owner is unknown (%v).", err))
			}
		}
		if owner != nil {
			if err := add(owner.StateDir(), owner.Name+"'s banger state: store, images, kernels, VM disks and logs"); err != nil {
				return nil, err
			}
		}
	}
	if owner != nil {
		p.Owner = *owner
		if err := checkProtected(p.Removals, *owner); err != nil {
			return nil, fmt.Errorf("plan uninstall: %w", err)
		}
	}
	if len(units) > 0 {
		p.Commands = []Command{{Args: []string{"daemon-reload"}, Why: "make systemd forget the removed units"}}
	}

	if p.Empty() {
		p.Explanation = append(p.Explanation, "banger is not installed as a system service here: there is nothing to remove.")
		return p, nil
	}
	p.Explanation = append(p.Explanation,
		"Stops and disables the banger services and removes their files. Running VMs are not stopped (the services never kill them): banger system uninstall refuses while any runs, unless --force, which leaves them running with no daemon to manage them.")
	kept := "Kept: your config (~/.config/banger/config.toml), banger's ssh keys (~/.config/banger/ssh) and ~/.ssh"
	if purge {
		p.Explanation = append(p.Explanation, kept+".")
	} else {
		p.Explanation = append(p.Explanation, kept+", and banger's state (~/.local/state/banger: images, VM disks), which purge removes.")
	}
	p.Explanation = append(p.Explanation,
		"The network the helper set up (the bridge, its bgtap taps and the nftables tables \"ip banger\" and \"bridge banger\") is removed afterwards when no VM runs, and net.ipv4.ip_forward gets back the value it had before the helper turned it on; with VMs left running it all stays for them.",
		"Root is needed to stop the services and to remove files from the system directories.")
	return p, nil
}

// checkProtected refuses removals that are, or contain, the owner's files
// that uninstalling must never touch.
func checkProtected(removals []PlannedRemoval, owner Account) error {
	protected := []string{
		owner.Home,
		filepath.Join(owner.Home, ".ssh"),
		owner.ConfigDir(),
		filepath.Join(owner.ConfigDir(), "ssh"),
		filepath.Join(owner.ConfigDir(), "config.toml"),
	}
	for _, r := range removals {
		for _, keep := range protected {
			if r.Path == keep || strings.HasPrefix(keep, r.Path+"/") {
				return fmt.Errorf("refusing to remove %s: it holds %s", r.Path, keep)
			}
		}
		for _, inside := range protected[1:] {
			if strings.HasPrefix(r.Path, inside+"/") {
				return fmt.Errorf("refusing to remove %s: it is in %s", r.Path, inside)
			}
		}
	}
	return nil
}

// Describe writes the plan in plain words: what it does and why, every
// directory, file and command, the full text of every file it generates
// (the units root will run, the metadata), and why root is needed.
func (p *Plan) Describe(w io.Writer) {
	title := map[string]string{
		KindInstall:   "Install banger as system services",
		KindUninstall: "Uninstall banger's system services",
		KindPurge:     "Uninstall banger's system services and purge its state",
	}[p.Kind]
	if p.Owner.Name != "" {
		title += fmt.Sprintf(" (owner %s)", p.Owner.Name)
	}
	if p.Root != "/" && p.Root != "" {
		title += fmt.Sprintf(", under %s", p.Root)
	}
	fmt.Fprintf(w, "%s.\n\n", title)
	for _, e := range p.Explanation {
		fmt.Fprintf(w, "%s\n", e)
	}
	cmds := func(head string, cs []Command) {
		if len(cs) == 0 {
			return
		}
		fmt.Fprintf(w, "\n%s\n", head)
		for _, c := range cs {
			fmt.Fprintf(w, "  %s\n      %s\n", c, c.Why)
		}
	}
	cmds("First it runs:", p.Before)
	if len(p.Dirs) > 0 {
		fmt.Fprintf(w, "\nDirectories it creates:\n")
		for _, d := range p.Dirs {
			owner := "root"
			if d.UID >= 0 {
				owner = fmt.Sprintf("uid %d", d.UID)
				if d.UID == p.Owner.UID && p.Owner.Name != "" {
					owner = p.Owner.Name
				}
			}
			fmt.Fprintf(w, "  %s (mode %04o, owner %s)\n      %s\n", d.Path, d.Mode.Perm(), owner, d.Why)
		}
	}
	if len(p.Files) > 0 {
		fmt.Fprintf(w, "\nFiles it writes (replacing any already there):\n")
		for _, f := range p.Files {
			from := ""
			if f.Source != "" {
				from = ", copied from " + f.Source
			}
			fmt.Fprintf(w, "  %s (mode %04o%s)\n      %s\n", f.Path, f.Mode.Perm(), from, f.Why)
		}
	}
	if len(p.Removals) > 0 {
		fmt.Fprintf(w, "\nIt removes:\n")
		for _, r := range p.Removals {
			what := r.Path
			if r.Dir {
				what += "/ (with everything in it)"
			}
			fmt.Fprintf(w, "  %s\n      %s\n", what, r.Why)
		}
	}
	cmds("Then it runs:", p.Commands)
	p.describeContents(w)
	if p.Empty() {
		return
	}
	switch p.Kind {
	case KindInstall:
		fmt.Fprintf(w, "\nIf a step fails, what was done is undone: new files are removed, replaced ones restored.\n")
	default:
		fmt.Fprintf(w, "\nIf removing fails, what was removed is put back.\n")
	}
	if p.NeedsRoot {
		fmt.Fprintf(w, "This needs root (run it with sudo).\n")
	}
}

// describeContents writes the full text of every file the plan generates
// (not the binaries it copies), so that what will run as root can be read
// before it is installed.
func (p *Plan) describeContents(w io.Writer) {
	first := true
	for _, f := range p.Files {
		if f.Source != "" {
			continue
		}
		if first {
			fmt.Fprintf(w, "\nThe files it generates, in full (the binaries are copied as they are):\n")
			first = false
		}
		fmt.Fprintf(w, "\n==> %s <==\n", f.Path)
		w.Write(f.Content)
		if len(f.Content) > 0 && f.Content[len(f.Content)-1] != '\n' {
			fmt.Fprintln(w)
		}
	}
}
