//go:build e2e

// Package e2e boots real VMs through the real banger binaries. Each
// top-level test is one named scenario (list them with `make e2e-list`, run
// one with `make e2e SCENARIO=TestExitCode`). All scenarios share one
// isolated banger installation (its own XDG dirs, daemon, kernel and image)
// set up in TestMain and torn down afterwards, even when scenarios fail.
//
// Network namespace: as root, setup makes one named namespace for the
// whole run (banger-e2e-<pid>, /run/netns/...) and every start of the
// suite's daemon, restarts included, joins it; so every guest network of
// the run (bridge, taps, NAT rules, DNS) lives there and daemons re-adopt
// the taps of their VMs. Teardown kills every process left in it, by pid,
// then deletes it.
//
// The CLI runs with BANGER_NO_AUTOSTART=1: when the harness's daemon is
// not running (a scenario died between a stop and a start), CLI calls fail
// instead of starting bangerd themselves, as root, in the host's own
// network namespace.
//
// Environment: BANGER_BIN (dir with banger, bangerd, banger-agent) and
// BANGER_FIXTURES (the cache made by scripts/fixtures.sh).
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// env is the shared installation.
type env struct {
	bin     string // dir of the binaries
	root    string // temp dir holding the XDG dirs
	environ []string
	netns   bool
	// nsName is the run's named network namespace (empty without root).
	nsName string
	// daemonPID is the running daemon's pid (it lives in nsName).
	daemonPID int

	// egressCA is the test CA the daemon's egress proxy trusts for
	// upstream TLS (config egress_extra_ca): TestEgress's servers get
	// their certificates from it.
	egressCA *testCA

	// started records the pid of every daemon the harness started, for
	// teardown (a pointer: scenarios copy env to change its environment).
	started *pidLog
}

// pidLog is a list of pids safe for concurrent use.
type pidLog struct {
	mu   sync.Mutex
	pids []int
}

func (l *pidLog) add(pid int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pids = append(l.pids, pid)
}

func (l *pidLog) list() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]int(nil), l.pids...)
}

// daemonStartTimeout bounds a daemon start: generous, since a loaded
// 2-core CI machine is slow to schedule a fresh process.
const daemonStartTimeout = 60 * time.Second

// nsPath is the bind mount of the run's network namespace.
func (ev *env) nsPath() string { return filepath.Join("/run/netns", ev.nsName) }

var e *env

// maxImageSize is the suite's cap on what a pulled image may expand to.
const maxImageSize = "2G"

func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.list"); f != nil && f.Value.String() != "" {
		// Listing scenarios needs no installation.
		os.Exit(m.Run())
	}
	code := func() int {
		var err error
		e, err = setup()
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e setup:", err)
			if e != nil {
				e.teardown()
			}
			return 1
		}
		defer e.teardown()
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		go func() {
			<-sig
			e.teardown()
			os.Exit(130)
		}()
		return m.Run()
	}()
	os.Exit(code)
}

func setup() (*env, error) {
	bin := os.Getenv("BANGER_BIN")
	if bin == "" {
		return nil, fmt.Errorf("BANGER_BIN is not set (run through `make e2e`)")
	}
	fixtures := os.Getenv("BANGER_FIXTURES")
	if fixtures == "" {
		fixtures = "/var/cache/banger-fixtures"
	}
	deb := filepath.Join(fixtures, "kernel/linux-image.deb")
	rootfs := filepath.Join(fixtures, "rootfs")
	for _, p := range []string{deb, rootfs} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("fixture missing: %v (run scripts/fixtures.sh)", err)
		}
	}
	root, err := os.MkdirTemp("", "banger-e2e-")
	if err != nil {
		return nil, err
	}
	ev := &env{bin: bin, root: root, started: &pidLog{}}
	ev.environ = append(os.Environ(),
		"XDG_STATE_HOME="+filepath.Join(root, "state"),
		"XDG_CONFIG_HOME="+filepath.Join(root, "config"),
		"XDG_RUNTIME_DIR="+filepath.Join(root, "run"),
		"BANGER_RUNTIME_DIR="+filepath.Join(root, "run", "banger"),
		"NO_COLOR=1",
		// Never let the CLI start a daemon of its own (see the package doc).
		"BANGER_NO_AUTOSTART=1",
	)
	for _, d := range []string{"state", "config/banger", "run"} {
		os.MkdirAll(filepath.Join(root, d), 0o700)
	}
	// Small VMs: scenarios assert behaviour, not capacity. The catalog is
	// a file the catalog scenarios write (missing until then). The export
	// and serial-log caps are small so that TestHostileGuest can exceed
	// them quickly under TCG. The DNS upstream is the resolver
	// TestHostileNetwork runs in its uplink namespace (hostileUpstream),
	// never this machine's resolver.
	ca, err := newTestCA(filepath.Join(root, "egress-test-ca.pem"))
	if err != nil {
		return ev, err
	}
	ev.egressCA = ca
	os.WriteFile(filepath.Join(root, "config/banger/config.toml"),
		[]byte("vcpu = 2\nmemory_mib = 512\ndisk_size = \"1G\"\nstop_timeout = \"20s\"\n"+
			"export_max_mib = "+fmt.Sprint(hostileExportMaxMiB)+"\nserial_log_max_mib = "+fmt.Sprint(hostileSerialMaxMiB)+"\n"+
			// Registry images of the suite stay well below; a bomb goes beyond.
			"max_image_size = \""+maxImageSize+"\"\n"+
			"catalog_url = \""+filepath.Join(root, "catalog.json")+"\"\n"+
			"dns_upstreams = [\""+hostileUpstream+"\"]\n"+
			"egress_extra_ca = \""+ca.file+"\"\n"), 0o600)

	// Every guest network lives in a namespace made for this run: the
	// daemon (and so every VMM) runs inside it, across restarts.
	if os.Geteuid() == 0 {
		ev.netns = true
		ev.nsName = fmt.Sprintf("banger-e2e-%d", os.Getpid())
		if out, err := exec.Command("ip", "netns", "add", ev.nsName).CombinedOutput(); err != nil {
			ev.nsName = ""
			return ev, fmt.Errorf("ip netns add: %v %s", err, out)
		}
		if out, err := exec.Command("ip", "-n", ev.nsName, "link", "set", "lo", "up").CombinedOutput(); err != nil {
			return ev, fmt.Errorf("lo up in %s: %v %s", ev.nsName, err, out)
		}
	}
	if err := ev.startDaemon(); err != nil {
		return ev, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if out, err := ev.run(ctx, "kernel", "import", "debian", "--from", deb); err != nil {
		return ev, fmt.Errorf("kernel import: %v\n%s", err, out)
	}
	if out, err := ev.run(ctx, "image", "build", "debian", "--from-dir", rootfs, "--size", "2G"); err != nil {
		return ev, fmt.Errorf("image build: %v\n%s", err, out)
	}
	return ev, nil
}

// startDaemon starts bangerd explicitly (inside the run's network
// namespace when root), since the CLI is forbidden to start one.
func (ev *env) startDaemon() error {
	logf, err := os.OpenFile(filepath.Join(ev.root, "bangerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	var cmd *exec.Cmd
	if ev.netns {
		// nsenter execs bangerd: the pid below is the daemon's.
		cmd = exec.Command("nsenter", "--net="+ev.nsPath(), "--", filepath.Join(ev.bin, "bangerd"))
	} else {
		cmd = exec.Command(filepath.Join(ev.bin, "bangerd"))
	}
	cmd.Env = ev.environ
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	ev.daemonPID = cmd.Process.Pid
	ev.started.add(cmd.Process.Pid)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(daemonStartTimeout)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("bangerd exited while starting (%v); log:\n%s", err, tail(ev.daemonLog(), 40))
		default:
		}
		if ev.daemonUp() {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("bangerd did not answer within %s; log:\n%s", daemonStartTimeout, tail(ev.daemonLog(), 40))
}

// daemonUp reports whether the run's daemon answers.
func (ev *env) daemonUp() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := ev.run(ctx, "daemon", "status")
	return err == nil
}

// restartDaemonAfter makes sure, when t ends, that the run's daemon is up
// again, for scenarios that stop it: one that fails between its stop and
// its start must not leave the later scenarios without a daemon.
func (ev *env) restartDaemonAfter(t *testing.T) {
	t.Cleanup(func() {
		if !ev.daemonUp() {
			if err := ev.startDaemon(); err != nil {
				t.Errorf("restart the daemon after %s: %v", t.Name(), err)
			}
		}
	})
}

// waitFor polls cond every interval until it holds or d has passed, and
// reports whether it held. what names the condition for the caller's
// message.
func waitFor(ctx context.Context, d, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		select {
		case <-ctx.Done():
		case <-time.After(interval):
		}
	}
}

func (ev *env) daemonLog() string {
	b, _ := os.ReadFile(filepath.Join(ev.root, "bangerd.log"))
	return string(b)
}

var teardownOnce sync.Once

// teardown deletes every VM (when the daemon answers: the CLI starts none),
// stops the daemon, then kills by pid every daemon and VMM the run started
// that is still there, deletes the namespace and removes the directories.
func (ev *env) teardown() {
	teardownOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		var pids []int
		if vms, err := ev.listVMs(ctx); err == nil {
			for _, v := range vms {
				if v.PID > 0 {
					pids = append(pids, v.PID)
				}
				ev.run(ctx, "vm", "delete", v.Name)
			}
		}
		ev.run(ctx, "daemon", "stop")
		// No daemon or VMM of this run may outlive it.
		pids = append(pids, ev.started.list()...)
		pids = append(pids, ev.pidFiles()...)
		if ev.nsName != "" {
			// Every process in the run's namespace: the daemons and VMMs of
			// every installation the run made (the update scenario's too).
			pids = append(pids, pidsInNetns(ev.nsPath())...)
		}
		for _, pid := range pids {
			if pid > 0 && pid != os.Getpid() && ev.ours(pid) {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		waitFor(ctx, 10*time.Second, 100*time.Millisecond, func() bool {
			for _, pid := range pids {
				if pid != os.Getpid() && alive(pid) && ev.ours(pid) {
					return false
				}
			}
			return true
		})
		if ev.nsName != "" {
			if out, err := exec.Command("ip", "netns", "del", ev.nsName).CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "e2e: ip netns del %s: %v %s\n", ev.nsName, err, out)
			}
		}
		if os.Getenv("BANGER_E2E_KEEP") == "" {
			os.RemoveAll(ev.root)
		} else {
			fmt.Fprintln(os.Stderr, "e2e: kept", ev.root)
		}
	})
}

// pidFiles reads the pids the run's daemon recorded: its own and its
// VMMs'.
func (ev *env) pidFiles() []int {
	files, _ := filepath.Glob(filepath.Join(ev.root, "run/banger/vms/*/*.pid"))
	files = append(files, filepath.Join(ev.root, "run/banger/bangerd.pid"))
	var pids []int
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var pid int
		if _, err := fmt.Sscan(string(b), &pid); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// ours reports whether pid is still a process of this run (a recorded pid
// may have been reused): one in the run's namespace, or, without one, one
// whose command line names the run's directory.
func (ev *env) ours(pid int) bool {
	if ev.nsName != "" {
		return sameNetns(pid, ev.nsPath())
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && bytes.Contains(b, []byte(ev.root))
}

// sameNetns reports whether pid's network namespace is the one bound at
// path.
func sameNetns(pid int, path string) bool {
	var want, got syscall.Stat_t
	if syscall.Stat(path, &want) != nil || syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &got) != nil {
		return false
	}
	return want.Dev == got.Dev && want.Ino == got.Ino
}

// pidsInNetns lists the processes whose network namespace is the one
// bound at path.
func pidsInNetns(path string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, en := range ents {
		var pid int
		if _, err := fmt.Sscan(en.Name(), &pid); err != nil || pid <= 0 {
			continue
		}
		if sameNetns(pid, path) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// result of one CLI invocation.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// cli runs banger with args and returns what it printed and its exit code.
func (ev *env) cli(ctx context.Context, stdin string, args ...string) result {
	return ev.command(ctx, stdin, filepath.Join(ev.bin, "banger"), args...)
}

func (ev *env) run(ctx context.Context, args ...string) (string, error) {
	r := ev.cli(ctx, "", args...)
	if r.code != 0 {
		return r.stdout + r.stderr, fmt.Errorf("banger %s: exit %d", strings.Join(args, " "), r.code)
	}
	return r.stdout, nil
}

type vmInfo struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	State     string `json:"state"`
	PID       int    `json:"pid"`
	VCPU      int    `json:"vcpu"`
	LastError string `json:"last_error"`
}

func (ev *env) listVMs(ctx context.Context) ([]vmInfo, error) {
	out, err := ev.run(ctx, "vm", "list", "--json")
	if err != nil {
		return nil, err
	}
	var vms []vmInfo
	return vms, json.Unmarshal([]byte(out), &vms)
}

// helpers for scenarios

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func must(t *testing.T, r result) result {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("command failed: %s\ndaemon log tail:\n%s", r, tail(e.daemonLog(), 30))
	}
	return r
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// newVM creates a running VM for one scenario and deletes it afterwards.
func newVM(t *testing.T, ctx context.Context, name string, extra ...string) string {
	t.Helper()
	args := append([]string{"vm", "create", "--name", name}, extra...)
	must(t, e.cli(ctx, "", args...))
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		e.cli(c, "", "vm", "delete", name)
	})
	return name
}

func showVM(t *testing.T, ctx context.Context, name string) vmInfo {
	t.Helper()
	r := must(t, e.cli(ctx, "", "vm", "show", "--json", name))
	var v vmInfo
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("vm show: %v", err)
	}
	return v
}

func bootID(t *testing.T, ctx context.Context, name string) string {
	t.Helper()
	r := must(t, e.cli(ctx, "", "vm", "exec", name, "--", "cat", "/proc/sys/kernel/random/boot_id"))
	return strings.TrimSpace(r.stdout)
}

func vmNames(t *testing.T, ctx context.Context) map[string]vmInfo {
	t.Helper()
	vms, err := e.listVMs(ctx)
	if err != nil {
		t.Fatalf("vm list: %v", err)
	}
	m := map[string]vmInfo{}
	for _, v := range vms {
		m[v.Name] = v
	}
	return m
}

// shared is one long-lived VM for the scenarios that only need a running
// guest (exec semantics), booted once.
var shared struct {
	once sync.Once
	name string
	err  error
}

func sharedVM(t *testing.T) string {
	t.Helper()
	shared.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		r := e.cli(ctx, "", "vm", "create", "--name", "shared")
		if r.code != 0 {
			shared.err = fmt.Errorf("create shared vm: %s", r)
		}
		shared.name = "shared"
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.name
}

// alive reports whether pid is a live process (zombies, which only wait
// for their parent to reap them, count as gone).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z'
}

// cliNS runs banger inside the run's network namespace, where the VMs'
// bridge is (for commands that talk to guests over the network: ssh).
func (ev *env) cliNS(ctx context.Context, stdin string, args ...string) result {
	if !ev.netns {
		return ev.cli(ctx, stdin, args...)
	}
	return ev.command(ctx, stdin, "nsenter", append([]string{"--net=" + ev.nsPath(), "--", filepath.Join(ev.bin, "banger")}, args...)...)
}

// inNS runs name with args inside the run's network namespace.
func (ev *env) inNS(ctx context.Context, name string, args ...string) result {
	if !ev.netns {
		return ev.command(ctx, "", name, args...)
	}
	return ev.command(ctx, "", "nsenter", append([]string{"--net=" + ev.nsPath(), "--", name}, args...)...)
}

func (ev *env) command(ctx context.Context, stdin, name string, args ...string) result {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = ev.environ
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	return runCmd(cmd)
}

// runCmd runs cmd and returns what it printed and its exit code (-1 when
// it could not run, with the reason in stderr).
func runCmd(cmd *exec.Cmd) result {
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	code := 0
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else {
			code = -1
			se.WriteString(err.Error())
		}
	}
	return result{so.String(), se.String(), code}
}

func jsonUnmarshal(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("decode %q: %v", s, err)
	}
}
