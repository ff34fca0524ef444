package firecracker

// A fake jailer, following Firecracker's docs/jailer.md: the test binary
// started through a link called "jailer" (see TestMain). It parses its
// arguments as strictly as the real one, validates them the same way,
// builds the documented jail (the copy of the exec file, root/, /dev,
// /dev/net and /run owned by uid:gid with mode 0700, the device nodes,
// the pid file), drops the environment and execs the jail's copy of the
// exec file as /<exec file name> --id <id> --start-time-us ...
// --start-time-cpu-us ... --parent-cpu-time-us ... <args after -->. The
// exec'd process is the fake Firecracker, which serves the API with the
// same validation as ever.
//
// Where it must differ from the real jailer, and why:
//
//   - The test binary is dynamically linked (the real Firecracker is a
//     static musl binary), so it cannot be exec'd inside a chroot that
//     holds no libc. The fake therefore execs the jail's copy first and
//     the fake Firecracker then chroots into the jail and switches to
//     uid:gid as its first act, after loading the API definition and
//     opening the request record (host files it could not reach from
//     inside). The result is the same: the VMM's pid is the jailer's,
//     its command line is what the real jailer execs, it runs chrooted as
//     uid:gid and every path it opens is resolved in the jail.
//   - Without root there is no chroot, setuid or mknod: the fake then
//     builds the same layout, skips the device nodes and the ownership
//     switch (the tests pass the test user's own uid and gid), and the
//     fake Firecracker resolves every path it is given inside the jail
//     itself. The layout, the paths and the argv are still tested.
//   - The environment is cleared except for the BANGER_FAKE_ variables,
//     the fake Firecracker's only configuration.
//   - Device nodes it cannot create (a container without CAP_MKNOD) are
//     reported and skipped: the fake Firecracker opens none.
//   - --daemonize, --new-pid-ns, cgroups and resource limits are parsed
//     but refused as not implemented: the driver passes none of them.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Environment of the fake jailer and of the fake Firecracker it execs.
const (
	// fakeJailEnv tells the exec'd fake Firecracker its jail (a
	// fakeJail, JSON).
	fakeJailEnv = "BANGER_FAKE_FC_JAIL"
	// fakeJailerArgvEnv names a file the fake jailer appends its argv to
	// (a JSON array per line): the jailer process is gone once it execs.
	fakeJailerArgvEnv = "BANGER_FAKE_FC_JAILER_ARGV"
	// fakeJailerVersionEnv overrides the version "--version" reports.
	fakeJailerVersionEnv = "BANGER_FAKE_FC_JAILER_VERSION"
)

// argSpec is one argument of the fakes' command line parser, which
// behaves like Firecracker's and the jailer's (utils::arg_parser): only
// "--name value" and "--name" forms, each at most once unless multiple, a
// value never starts with "--", required arguments are enforced, and
// everything after "--" is handed on untouched. "--help" and "--version"
// short-circuit the rest.
type argSpec struct {
	value    bool
	required bool
	multiple bool
	def      string
}

// argError is a parse error, worded as the real parser words it.
type argError string

func (e argError) Error() string { return string(e) }

// parsedArgs is what parseStrictArgs found.
type parsedArgs struct {
	vals  map[string][]string
	extra []string
}

func (a parsedArgs) has(name string) bool { _, ok := a.vals[name]; return ok }

// get returns the (first) value of name.
func (a parsedArgs) get(name string) string {
	if v := a.vals[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// parseStrictArgs parses args (without the program name) against specs,
// with the real parser's error messages.
func parseStrictArgs(args []string, specs map[string]argSpec) (parsedArgs, error) {
	a := parsedArgs{vals: map[string][]string{}}
	for i, arg := range args {
		if arg == "--" {
			args, a.extra = args[:i], append([]string{}, args[i+1:]...)
			break
		}
	}
	for _, arg := range args {
		if arg == "--help" || arg == "--version" {
			a.vals[strings.TrimPrefix(arg, "--")] = []string{"true"}
			return a, nil
		}
	}
	for i := 0; i < len(args); i++ {
		name, ok := strings.CutPrefix(args[i], "--")
		if !ok {
			return a, argError(fmt.Sprintf("Found argument '%s' which wasn't expected, or isn't valid in this context.", args[i]))
		}
		spec, ok := specs[name]
		if !ok {
			return a, argError(fmt.Sprintf("Found argument '%s' which wasn't expected, or isn't valid in this context.", name))
		}
		if a.has(name) && !spec.multiple {
			return a, argError(fmt.Sprintf("The argument '%s' was provided more than once.", name))
		}
		val := "true"
		if spec.value {
			if i+1 >= len(args) || strings.HasPrefix(args[i+1], "--") {
				return a, argError(fmt.Sprintf("The argument '%s' requires a value, but none was supplied.", name))
			}
			i++
			val = args[i]
		}
		a.vals[name] = append(a.vals[name], val)
	}
	for name, spec := range specs {
		switch {
		case a.has(name):
		case spec.required:
			return a, argError(fmt.Sprintf("Argument '%s' required, but not found.", name))
		case spec.def != "":
			a.vals[name] = []string{spec.def}
		}
	}
	return a, nil
}

// jailerArgSpecs returns the jailer's arguments (docs/jailer.md).
func jailerArgSpecs() map[string]argSpec {
	return map[string]argSpec{
		"id":              {value: true, required: true},
		"exec-file":       {value: true, required: true},
		"uid":             {value: true, required: true},
		"gid":             {value: true, required: true},
		"chroot-base-dir": {value: true, def: "/srv/jailer"},
		"netns":           {value: true},
		"daemonize":       {},
		"new-pid-ns":      {},
		"cgroup":          {value: true, multiple: true},
		"resource-limit":  {value: true, multiple: true},
		"cgroup-version":  {value: true, def: "1"},
		"parent-cgroup":   {value: true},
	}
}

// fakeJail is what the fake jailer tells the fake Firecracker.
type fakeJail struct {
	Root string `json:"root"`
	UID  int    `json:"uid"`
	GID  int    `json:"gid"`
}

// validInstanceID is the jailer's (and Firecracker's) id rule.
func validInstanceID(id string) bool {
	if len(id) < 1 || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// runFakeJailer is the fake jailer's main; argv includes the program
// name.
func runFakeJailer(argv []string) int {
	start := time.Now()
	a, err := parseStrictArgs(argv[1:], jailerArgSpecs())
	if err != nil {
		fmt.Printf("Arguments parsing error: %v \n\nFor more information try --help.\n", err)
		return 1
	}
	if a.has("version") || a.has("help") {
		v := fakeVersion
		if e := os.Getenv(fakeJailerVersionEnv); e != "" {
			v = e
		}
		fmt.Printf("Jailer v%s\n\n", v)
		return 0
	}
	if p := os.Getenv(fakeJailerArgvEnv); p != "" {
		b, _ := json.Marshal(argv)
		if f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); err == nil {
			f.Write(append(b, '\n'))
			f.Close()
		}
	}
	// The real jailer panics with "Jailer error: ..." on stderr.
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "Jailer error: "+format+"\n", args...)
		return 1
	}
	for _, f := range []string{"daemonize", "new-pid-ns", "cgroup", "resource-limit", "parent-cgroup"} {
		if a.has(f) {
			return fail("--%s is not implemented by the fake jailer", f)
		}
	}
	if v := a.get("cgroup-version"); v != "1" && v != "2" {
		return fail("%s is an invalid cgroup version specifier", v)
	}
	id := a.get("id")
	if !validInstanceID(id) {
		return fail("Invalid instance ID: %q", id)
	}
	execPath, err := filepath.EvalSymlinks(a.get("exec-file"))
	if err == nil {
		execPath, err = filepath.Abs(execPath)
	}
	if err != nil {
		return fail("Failed to canonicalize path %s: %v", a.get("exec-file"), err)
	}
	execSt, err := os.Stat(execPath)
	if err != nil || !execSt.Mode().IsRegular() {
		return fail("%s is not a file", execPath)
	}
	execName := filepath.Base(execPath)
	if !strings.Contains(execName, "firecracker") {
		return fail("Invalid filename. The filename of `--exec-file` option must contain \"firecracker\": %s", execName)
	}
	base, err := filepath.EvalSymlinks(a.get("chroot-base-dir"))
	if err != nil {
		return fail("Failed to canonicalize path %s: %v", a.get("chroot-base-dir"), err)
	}
	if st, err := os.Stat(base); err != nil || !st.IsDir() {
		return fail("%s is not a directory", base)
	}
	uid, err := strconv.ParseUint(a.get("uid"), 10, 32)
	if err != nil {
		return fail("Invalid uid: %s", a.get("uid"))
	}
	gid, err := strconv.ParseUint(a.get("gid"), 10, 32)
	if err != nil {
		return fail("Invalid gid: %s", a.get("gid"))
	}
	root := filepath.Join(base, execName, id, "root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return fail("Failed to create directory %s: %v", root, err)
	}
	execCopy := filepath.Join(root, execName)
	if err := copyExec(execPath, execCopy, execSt.Mode().Perm()); err != nil {
		return fail("Failed to copy %s to %s: %v", execPath, execCopy, err)
	}
	var netns *os.File
	if p := a.get("netns"); p != "" {
		if netns, err = os.Open(p); err != nil {
			return fail("Failed to open file %s: %v", p, err)
		}
		var fs unix.Statfs_t
		if err := unix.Fstatfs(int(netns.Fd()), &fs); err != nil || fs.Type != unix.NSFS_MAGIC {
			return fail("Failed to join network namespace: netns: %s is not a namespace handle", p)
		}
	}
	isRoot := os.Geteuid() == 0
	// The real jailer now pivots into root; the fake works on host
	// paths (see the top of the file).
	for _, dir := range []string{"/", "/dev", "/dev/net", "/run"} {
		p := filepath.Join(root, dir)
		if err := os.MkdirAll(p, 0o700); err != nil {
			return fail("Failed to create directory %s: %v", dir, err)
		}
		if err := os.Chmod(p, 0o700); err != nil {
			return fail("Failed to change permissions on %s: %v", dir, err)
		}
		if err := os.Chown(p, int(uid), int(gid)); err != nil {
			return fail("Failed to change owner for %s: %v", dir, err)
		}
	}
	if isRoot {
		for _, dev := range []struct {
			path       string
			maj, minor uint32
		}{{"/dev/net/tun", 10, 200}, {"/dev/kvm", 10, 232}, {"/dev/urandom", 1, 9}} {
			p := filepath.Join(root, dev.path)
			err := unix.Mknod(p, unix.S_IFCHR|0o600, int(unix.Mkdev(dev.maj, dev.minor)))
			if err == nil {
				err = os.Chown(p, int(uid), int(gid))
			}
			if err != nil {
				fmt.Printf("Warning! fake jailer: could not create %s: %v (the fake firecracker opens no device)\n", dev.path, err)
			}
		}
	}
	pidFile := filepath.Join(root, execName+".pid")
	pf, err := os.OpenFile(pidFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fail("Failed to open file %s: %v", pidFile, err)
	}
	fmt.Fprint(pf, os.Getpid())
	pf.Close()

	cfg, _ := json.Marshal(fakeJail{Root: root, UID: int(uid), GID: int(gid)})
	env := []string{fakeJailEnv + "=" + string(cfg)}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "BANGER_FAKE_") && !strings.HasPrefix(kv, fakeJailEnv+"=") {
			env = append(env, kv)
		}
	}
	elapsed := strconv.FormatInt(time.Since(start).Microseconds(), 10)
	args := append([]string{
		"/" + execName,
		"--id", id,
		"--start-time-us", strconv.FormatInt(start.UnixMicro(), 10),
		"--start-time-cpu-us", "0",
		"--parent-cpu-time-us", elapsed,
	}, a.extra...)
	if netns != nil && isRoot {
		// setns applies to the calling thread, which exec keeps.
		runtime.LockOSThread()
		if err := unix.Setns(int(netns.Fd()), unix.CLONE_NEWNET); err != nil {
			return fail("Failed to join network namespace: netns: %v", err)
		}
	}
	err = syscall.Exec(execCopy, args, env)
	return fail("Failed to exec into Firecracker: %v", err)
}

// copyExec copies the exec file into the jail, as the jailer does.
func copyExec(src, dst string, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// enterFakeJail puts the fake Firecracker in the jail cfg describes: a
// real chroot and uid:gid switch as root, otherwise a path mapping into
// the jail (the uid and gid must then be the process's own). It returns
// the mapping from requested paths to the files to open.
func enterFakeJail(cfg string) (func(string) string, error) {
	var j fakeJail
	if err := json.Unmarshal([]byte(cfg), &j); err != nil {
		return nil, err
	}
	if os.Geteuid() == 0 {
		if err := syscall.Chroot(j.Root); err != nil {
			return nil, fmt.Errorf("chroot %s: %w", j.Root, err)
		}
		if err := os.Chdir("/"); err != nil {
			return nil, err
		}
		// Go applies these to every thread of the process.
		if err := syscall.Setgroups(nil); err != nil {
			return nil, fmt.Errorf("setgroups: %w", err)
		}
		if err := syscall.Setgid(j.GID); err != nil {
			return nil, fmt.Errorf("setgid %d: %w", j.GID, err)
		}
		if err := syscall.Setuid(j.UID); err != nil {
			return nil, fmt.Errorf("setuid %d: %w", j.UID, err)
		}
		return func(p string) string { return p }, nil
	}
	if os.Getuid() != j.UID || os.Getgid() != j.GID {
		return nil, errors.New("without root the fake jail can only keep the test user's own uid and gid")
	}
	return func(p string) string { return filepath.Join(j.Root, p) }, nil
}
