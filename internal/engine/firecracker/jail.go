package firecracker

// Running Firecracker under the jailer (Driver.Jailer set), following
// Firecracker's docs/jailer.md:
//
//	jailer --id <id> --exec-file <firecracker> --uid <uid> --gid <gid> \
//	       --chroot-base-dir <base> [--netns <path>] \
//	       -- --api-sock /run/firecracker.socket
//
// The jailer copies the firecracker binary to
// <base>/<exec-file name>/<id>/root/<exec-file name>, makes root/ (0700),
// root/dev, root/dev/net and root/run owned by uid:gid, creates
// /dev/kvm, /dev/net/tun (and /dev/urandom, /dev/userfaultfd) in it,
// pivots into root/, writes its pid to /<exec-file name>.pid there, drops
// to uid:gid and execs /<exec-file name> --id <id> --start-time-us ...
// followed by the arguments after "--". Every path Firecracker is given
// (the API socket, and over the API the kernel, initrd, drives, serial
// output and vsock socket) is then resolved inside root/.
//
// The jail's layout, as the host sees it (root = <base>/<exec>/<id>/root):
//
//	root/<exec>                 the jailer's copy of firecracker
//	root/<exec>.pid             the jailer's pid file (firecracker's pid)
//	root/dev/...                the jailer's device nodes
//	root/run/firecracker.socket the API socket (Spec.QMPSocket, see JailSpec)
//	root/run/vsock.sock         the hybrid vsock socket (Spec.VsockSocket)
//	root/vmlinux, root/initramfs  Spec.Kernel, Spec.Initramfs
//	root/root.img, root/work.img  Spec.RootDisk, Spec.WorkDisk
//	root/serial.log             Spec.SerialLog
//
// The driver builds root/ before it runs the jailer (the jailer leaves an
// existing directory alone), so that every input problem is reported
// before anything runs:
//
//   - Files Firecracker writes (the disks and the serial log) are hard
//     links to the spec's files, so the guest's writes land in them, and
//     are chowned to the jail's uid:gid with mode 0600 (a hard link
//     shares the inode: the spec's files change owner too). A copy would
//     silently lose the guest's writes when the jail is removed, so a file
//     on another filesystem than the chroot base (EXDEV) is an error that
//     says so; put the chroot base on the filesystem that holds the VMs'
//     files.
//   - Files Firecracker only reads (the kernel and the initramfs) are
//     shared between VMs, so they are never chowned: a world-readable,
//     not world-writable file is hard-linked (the jailed VMM can read but
//     not change it); anything else, or a file that cannot be linked, is
//     copied (mode 0400, owned by the jail's uid:gid).
//
// The API socket and the vsock socket live in root/run, which the jailer
// makes the jail user's; their host paths are what the daemon dials.
// Spec.PIDFile (written by the driver) and Spec.VMMLog (the jailer's and
// Firecracker's stdout and stderr, inherited) stay outside the jail.
//
// The jail directory <base>/<exec>/<id> is removed when a start fails,
// when the VMM's exit is observed (Instance.Done), by the next Start of
// the same VM, and by Driver.Cleanup.
//
// The driver never passes --daemonize: it already starts the jailer in a
// session of its own (setsid), so the daemon's signals never reach the
// VMM; --daemonize would fork (recent jailers) or fail (older ones call
// setsid as a session leader), and would send the VMM's output to
// /dev/null instead of the VMM log. Nor --new-pid-ns: firecracker would be
// the init of its own pid namespace, which ignores SIGTERM from outside
// (it has no handler). So the jailer execs firecracker in place, the pid
// the driver started is the VMM's, and Start checks that against the
// jailer's pid file.

import (
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"banger/internal/engine"
	"banger/internal/fsutil"
	"banger/internal/hosttools"
)

// DefaultChrootBase is the chroot base used when Driver.ChrootBase is
// empty: the jailer's own default.
const DefaultChrootBase = "/srv/jailer"

// Per-VM jail ids (Driver.JailUID 0): uid and gid JailIDBase + a hash of
// the jail id modulo JailIDCount, moved on past ids that belong to an
// account or group of this host or to another jail under the same chroot
// base.
//
// DefaultJailIDBase is 0x70000000: above the ranges systemd allots to
// users, dynamic users and containers (nspawn stops below 0x70000000) and
// above the default /etc/subuid allocations (which end at 600100000), and
// below 2^31, which some tools still mishandle.
const (
	DefaultJailIDBase = 0x70000000
	JailIDCount       = 65536
)

// maxJailID is the largest uid or gid the driver uses ((uid_t)-1 is
// "no change" to chown).
const maxJailID = 1<<32 - 2

// jailProbes bounds the search for a free per-VM id.
const jailProbes = 256

// Paths inside the jail (as the jailed Firecracker sees them).
const (
	jailRunDir      = "/run"
	jailAPISocket   = "/run/firecracker.socket" // the jailer docs' default
	jailVsockSocket = "/run/vsock.sock"
	jailKernel      = "/vmlinux"
	jailInitramfs   = "/initramfs"
	jailRootDisk    = "/root.img"
	jailWorkDisk    = "/work.img"
	jailSerialLog   = "/serial.log"
)

// jail is one VM's jailer layout.
type jail struct {
	base     string // chroot base
	execPath string // absolute firecracker path, for --exec-file
	execName string // file name the jailer derives from it
	execErr  error  // why execPath could not be resolved
	id       string // jail id: the VM's instance id
	dir      string // <base>/<execName>/<id>: the jail, removed as a whole
	root     string // dir/root: the chroot

	api   string // --api-sock inside the jail
	vsock string // vsock uds_path inside the jail; "" without vsock

	uid, gid int // chosen by Start
}

// host returns the host path of a path inside the jail.
func (j *jail) host(inJail string) string { return filepath.Join(j.root, inJail) }

// pidFile is the pid file the jailer writes in the jail.
func (j *jail) pidFile() string { return j.host(j.execName + ".pid") }

// inside returns the path inside the jail of a host path under root/run,
// or an error naming what is wrong with it.
func (j *jail) inside(field, host string) (string, error) {
	rel, err := filepath.Rel(j.root, filepath.Clean(host))
	if err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
		rel = "/" + rel
		if filepath.Dir(rel) == jailRunDir {
			return rel, nil
		}
	}
	return "", fmt.Errorf("%s %s: under the jailer it must be in the jail's %s, %s (see Driver.JailSpec)", field, host, jailRunDir, j.host(jailRunDir))
}

// jailBase returns the chroot base the driver uses.
func (d *Driver) jailBase() (string, error) {
	base := d.ChrootBase
	if base == "" {
		base = DefaultChrootBase
	}
	if !filepath.IsAbs(base) {
		return "", fmt.Errorf("jailer chroot base %q is not an absolute path", base)
	}
	return filepath.Clean(base), nil
}

// jailDir computes spec's jail without looking at its sockets. A
// firecracker binary that cannot be found is recorded in execErr (Start
// fails on it; Adopt and Cleanup do not need the binary).
func (d *Driver) jailDir(spec engine.Spec) (*jail, error) {
	base, err := d.jailBase()
	if err != nil {
		return nil, err
	}
	j := &jail{base: base, id: instanceID(spec)}
	j.execPath, j.execName, j.execErr = resolveExec(d.binary())
	j.dir = filepath.Join(j.base, j.execName, j.id)
	j.root = filepath.Join(j.dir, "root")
	return j, nil
}

// jailFor computes spec's jail; spec's sockets must be in it (JailSpec).
func (d *Driver) jailFor(spec engine.Spec) (*jail, error) {
	j, err := d.jailDir(spec)
	if err != nil {
		return nil, err
	}
	if j.api, err = j.inside("api socket", spec.QMPSocket); err != nil {
		return nil, err
	}
	if spec.VsockSocket != "" {
		if j.vsock, err = j.inside("vsock socket", spec.VsockSocket); err != nil {
			return nil, err
		}
		if j.vsock == j.api {
			return nil, fmt.Errorf("vsock socket %s is the api socket", spec.VsockSocket)
		}
	}
	return j, nil
}

// resolveExec finds the firecracker binary as the jailer will see it:
// its absolute path (for --exec-file) and the file name of what that
// resolves to. The jailer canonicalizes --exec-file and names the jail's
// directory and its copy of the binary after the result, so for a
// symlink /usr/bin/firecracker -> firecracker-v1.12.0-x86_64 the jail is
// <base>/firecracker-v1.12.0-x86_64/<id>. If the binary cannot be
// resolved, name is bin's own file name and err says why.
func resolveExec(bin string) (path, name string, err error) {
	name = filepath.Base(bin)
	p, err := hosttools.Path(bin)
	if err != nil {
		return "", name, err
	}
	if p, err = filepath.Abs(p); err != nil {
		return "", name, err
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", name, err
	}
	return p, filepath.Base(real), nil
}

// JailSpec returns spec as Start, Adopt and Cleanup must be given it when
// the driver runs Firecracker under the jailer: QMPSocket moved to
// <root>/run/firecracker.socket and VsockSocket (if set) to
// <root>/run/vsock.sock, where root is the VM's chroot,
// <ChrootBase>/<firecracker file name>/<id>/root. Those are the host
// paths of the sockets the jailed Firecracker creates, so they are what
// the caller dials, the guest agent's hybrid vsock included. The other
// paths are unchanged: the driver links the files into the jail itself.
//
// Without a jailer, or with an invalid ChrootBase (which Start reports),
// spec is returned unchanged. JailSpec changes nothing on disk; it looks
// the firecracker binary up to name the jail as the jailer will (see
// Driver.Binary), so the binary's resolved file name must not change
// while VMs run.
func (d *Driver) JailSpec(spec engine.Spec) engine.Spec {
	if d.Jailer == "" {
		return spec
	}
	j, err := d.jailDir(spec)
	if err != nil {
		return spec
	}
	spec.QMPSocket = j.host(jailAPISocket)
	if spec.VsockSocket != "" {
		spec.VsockSocket = j.host(jailVsockSocket)
	}
	return spec
}

// checkJail fails on a jailer configuration Start cannot use: a missing
// jailer or firecracker binary, a firecracker the jailer would refuse,
// jail ids out of range.
func (d *Driver) checkJail(j *jail) error {
	var errs []error
	if _, err := hosttools.Path(d.Jailer); err != nil {
		errs = append(errs, fmt.Errorf("jailer binary: %w", err))
	}
	if j.execErr != nil {
		errs = append(errs, fmt.Errorf("firecracker binary: %w", j.execErr))
	} else if err := d.checkExecName(j); err != nil {
		errs = append(errs, err)
	}
	if err := d.checkJailIDs(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// checkExecName fails if the jailer would refuse the firecracker binary.
func (d *Driver) checkExecName(j *jail) error {
	if !strings.Contains(j.execName, "firecracker") {
		return fmt.Errorf("the jailer only runs a binary whose file name contains \"firecracker\"; %s resolves to %s", d.binary(), j.execName)
	}
	return nil
}

// checkJailIDs fails on jail ids out of range.
func (d *Driver) checkJailIDs() error {
	var errs []error
	for _, v := range []struct {
		field string
		val   int
		max   int
	}{
		{"jail uid", d.JailUID, maxJailID},
		{"jail gid", d.JailGID, maxJailID},
		{"jail id base", d.JailIDBase, maxJailID - JailIDCount + 1},
	} {
		if v.val < 0 || v.val > v.max {
			errs = append(errs, fmt.Errorf("%s %d out of range 0..%d", v.field, v.val, v.max))
		}
	}
	return errors.Join(errs...)
}

// jailerArgs is the jailer's command line after the program name.
func (d *Driver) jailerArgs(j *jail) []string {
	args := []string{
		"--id", j.id,
		"--exec-file", j.execPath,
		"--uid", strconv.Itoa(j.uid),
		"--gid", strconv.Itoa(j.gid),
		"--chroot-base-dir", j.base,
	}
	if d.NetNS != "" {
		args = append(args, "--netns", d.NetNS)
	}
	// The jailer passes --id itself.
	return append(args, "--", "--api-sock", j.api)
}

// jailIDs picks the uid and gid the jailed Firecracker runs as: JailUID
// and JailGID when set (JailGID 0: the uid's number), otherwise a
// dedicated id for the VM (see DefaultJailIDBase).
func (d *Driver) jailIDs(j *jail) (uid, gid int, err error) {
	gidOf := func(uid int) int {
		if d.JailGID != 0 {
			return d.JailGID
		}
		return uid
	}
	if d.JailUID != 0 {
		return d.JailUID, gidOf(d.JailUID), nil
	}
	base := d.JailIDBase
	if base == 0 {
		base = DefaultJailIDBase
	}
	h := fnv.New32a()
	h.Write([]byte(j.id))
	start := h.Sum32() % JailIDCount
	taken := otherJailIDs(j)
	for i := range uint32(jailProbes) {
		c := base + int((start+i)%JailIDCount)
		if taken[c] || accountExists(c) {
			continue
		}
		return c, gidOf(c), nil
	}
	return 0, 0, fmt.Errorf("no free jail uid in %d..%d after %d tries: set a jail uid", base, base+JailIDCount-1, jailProbes)
}

// otherJailIDs returns the owners (uid and gid) of the other jails under
// j's chroot base.
func otherJailIDs(j *jail) map[int]bool {
	taken := map[int]bool{}
	execs, _ := os.ReadDir(j.base)
	for _, e := range execs {
		if !e.IsDir() {
			continue
		}
		ids, _ := os.ReadDir(filepath.Join(j.base, e.Name()))
		for _, id := range ids {
			dir := filepath.Join(j.base, e.Name(), id.Name())
			if dir == j.dir {
				continue
			}
			st, err := os.Stat(filepath.Join(dir, "root"))
			if err != nil {
				continue
			}
			if sys, ok := st.Sys().(*syscall.Stat_t); ok {
				taken[int(sys.Uid)], taken[int(sys.Gid)] = true, true
			}
		}
	}
	return taken
}

// accountExists reports whether id names a user or a group on this host.
func accountExists(id int) bool {
	s := strconv.Itoa(id)
	if _, err := user.LookupId(s); err == nil {
		return true
	}
	_, err := user.LookupGroupId(s)
	return err == nil
}

// vmmPaths are the paths Start sends over the API: the spec's own, or
// under the jailer their counterparts inside the jail.
type vmmPaths struct {
	kernel, initramfs, rootDisk, workDisk, serialLog, vsock string
}

// hostPaths are the spec's paths unchanged, for a VMM without a jail.
func hostPaths(spec engine.Spec) vmmPaths {
	return vmmPaths{
		kernel:    spec.Kernel,
		initramfs: spec.Initramfs,
		rootDisk:  spec.RootDisk,
		workDisk:  spec.WorkDisk,
		serialLog: spec.SerialLog,
		vsock:     spec.VsockSocket,
	}
}

// prepare creates the jail's root and puts spec's files in it (see the
// top of this file), before the jailer runs. The jail must not exist.
// It returns the paths to send over the API.
func (j *jail) prepare(spec engine.Spec) (vmmPaths, error) {
	if err := os.MkdirAll(j.root, 0o700); err != nil {
		return vmmPaths{}, fmt.Errorf("create jail: %w", err)
	}
	p := vmmPaths{vsock: j.vsock}
	for _, f := range []struct {
		field, src, dst string
		writable        bool
		out             *string
	}{
		{"kernel", spec.Kernel, jailKernel, false, &p.kernel},
		{"initramfs", spec.Initramfs, jailInitramfs, false, &p.initramfs},
		{"root disk", spec.RootDisk, jailRootDisk, true, &p.rootDisk},
		{"work disk", spec.WorkDisk, jailWorkDisk, true, &p.workDisk},
		{"serial log", spec.SerialLog, jailSerialLog, true, &p.serialLog},
	} {
		if f.src == "" {
			continue
		}
		place := j.placeReadOnly
		if f.writable {
			place = j.placeWritable
		}
		if err := place(f.field, f.src, j.host(f.dst)); err != nil {
			return vmmPaths{}, err
		}
		*f.out = f.dst
	}
	return p, nil
}

// placeWritable hard-links src to dst and gives it to the jail user.
func (j *jail) placeWritable(field, src, dst string) error {
	// link(2) does not follow a symlink: it would link the symlink,
	// whose target does not exist inside the jail.
	src, err := filepath.EvalSymlinks(src)
	if err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	if err := os.Link(src, dst); err != nil {
		if errors.Is(err, syscall.EXDEV) {
			return fmt.Errorf("%s %s is on another filesystem than the jail %s: it must be hard-linked into the jail, because a copy would not keep the guest's writes; put the jailer's chroot base on the filesystem that holds the vm's files", field, src, j.root)
		}
		return fmt.Errorf("link %s into the jail: %w", field, err)
	}
	if err := os.Chown(dst, j.uid, j.gid); err != nil {
		return fmt.Errorf("give %s to the jail user: %w", field, err)
	}
	if err := os.Chmod(dst, 0o600); err != nil {
		return fmt.Errorf("give %s to the jail user: %w", field, err)
	}
	return nil
}

// placeReadOnly hard-links src to dst when everyone may read and nobody
// but its owner may write it, and copies it for the jail user otherwise.
func (j *jail) placeReadOnly(field, src, dst string) error {
	src, err := filepath.EvalSymlinks(src)
	if err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	st, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	if st.Mode().Perm()&0o006 == 0o004 && os.Link(src, dst) == nil {
		return nil
	}
	if err := fsutil.CopyFile(src, dst, 0o400); err != nil {
		return fmt.Errorf("copy %s into the jail: %w", field, err)
	}
	if err := os.Chown(dst, j.uid, j.gid); err != nil {
		return fmt.Errorf("give %s to the jail user: %w", field, err)
	}
	return nil
}

// remove deletes the jail directory. The hard links in it go, not the
// files they share an inode with.
func (j *jail) remove() error {
	if err := os.RemoveAll(j.dir); err != nil {
		return fmt.Errorf("remove jail: %w", err)
	}
	return nil
}
