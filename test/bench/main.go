// Command bench compares booting through banger with booting the same
// kernel, initramfs and image with a bare, hand-written QEMU command line
// on the same machine type and accelerator as banger's own VMM, in the
// same run, several times each, interleaved. It prints the accelerator,
// banger's stage breakdown, both medians, their ratio and the QEMU
// process's resident memory per VM; then workspace prepare against
// git archive | vm exec tar x on a booted guest (time, files/s and the
// bytes each moved over the daemon's API socket).
//
//	BANGER_BIN=bin BANGER_FIXTURES=/var/cache/banger-fixtures go run ./test/bench [-n 5]
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

func main() {
	n := flag.Int("n", 5, "boots per side")
	ws := flag.Bool("workspace", true, "also measure workspace prepare against git archive | tar x")
	mem := flag.Bool("memory", true, "also measure idle VMs' memory with and without the balloon (memory.go)")
	memOnly := flag.Bool("memory-only", false, "only the memory measurements")
	wsRounds := flag.Int("workspace-rounds", 3, "workspace measurements per side (interleaved)")
	wsOnly := flag.Bool("workspace-only", false, "only the workspace measurements (no boot comparison, no memory)")
	flag.Parse()
	if *wsRounds < 1 {
		fmt.Fprintln(os.Stderr, "bench: -workspace-rounds must be at least 1")
		os.Exit(2)
	}
	if *wsOnly {
		*n, *ws, *mem = 0, true, false
	}
	if !*memOnly {
		if err := run(*n, *ws, *wsRounds); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
	}
	if *mem || *memOnly {
		if err := benchMemory(context.Background(), os.Getenv("BANGER_BIN"), os.Getenv("BANGER_FIXTURES")); err != nil {
			fmt.Fprintln(os.Stderr, "bench: memory:", err)
			os.Exit(1)
		}
	}
}

type env struct {
	bin     string
	root    string
	environ []string
}

func (e *env) banger(ctx context.Context, args ...string) (string, string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(e.bin, "banger"), args...)
	cmd.Env = e.environ
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("banger %s: %v\n%s", strings.Join(args, " "), err, se.String())
	}
	return so.String(), se.String(), err
}

func run(n int, ws bool, wsRounds int) error {
	bin, fixtures := os.Getenv("BANGER_BIN"), os.Getenv("BANGER_FIXTURES")
	if bin == "" || fixtures == "" {
		return fmt.Errorf("set BANGER_BIN and BANGER_FIXTURES (use `make bench`)")
	}
	root, err := os.MkdirTemp("", "banger-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	e := &env{bin: bin, root: root, environ: append(os.Environ(),
		"XDG_STATE_HOME="+root+"/state", "XDG_CONFIG_HOME="+root+"/config", "XDG_RUNTIME_DIR="+root+"/run",
		"BANGER_PROGRESS=1")}
	os.MkdirAll(root+"/config/banger", 0o700)
	// The daemon makes its directory inside XDG_RUNTIME_DIR, which must
	// exist (as a session's does).
	os.MkdirAll(root+"/run", 0o700)
	os.WriteFile(root+"/config/banger/config.toml", []byte("vcpu = 2\nmemory_mib = 512\ndisk_size = \"1G\"\nnetwork = \"none\"\ndns_listen = \"127.0.0.1:0\"\n"), 0o600)
	ctx := context.Background()
	defer e.banger(ctx, "daemon", "stop")

	if _, _, err := e.banger(ctx, "kernel", "import", "debian", "--from", fixtures+"/kernel/linux-image.deb"); err != nil {
		return err
	}
	if _, _, err := e.banger(ctx, "image", "build", "debian", "--from-dir", fixtures+"/rootfs", "--size", "2G"); err != nil {
		return err
	}
	// Warm-up: the first start runs the accelerator probe and builds the
	// initramfs variant; neither belongs in the comparison.
	if _, _, err := e.banger(ctx, "vm", "run", "--rm", "--", "true"); err != nil {
		return err
	}
	// A reference VM: the bare side boots exactly what banger's VMM was
	// given (machine, accelerator, CPU model, kernel, initramfs), read from
	// its command line; and its resident memory at rest after a command.
	if _, _, err := e.banger(ctx, "vm", "create", "--name", "ref"); err != nil {
		return err
	}
	if _, _, err := e.banger(ctx, "vm", "exec", "ref", "--", "true"); err != nil {
		return err
	}
	js, _, err := e.banger(ctx, "vm", "show", "--json", "ref")
	if err != nil {
		return err
	}
	var v struct {
		PID   int
		Accel string
	}
	if err := json.Unmarshal([]byte(js), &v); err != nil {
		return fmt.Errorf("vm show ref: %w", err)
	}
	rssBanger := rssKiB(v.PID)
	ref, err := vmmArgs(v.PID)
	e.banger(ctx, "vm", "delete", "ref")
	if err != nil {
		return err
	}
	fmt.Printf("accelerator: %s on both sides (banger's VMM: -machine %s -accel %s%s; kernel %s; initramfs %s)\n",
		v.Accel, ref.machine, ref.accel, ifSet(" -cpu ", ref.cpu), ref.kernel, ref.initrd)
	rootfs := filepath.Join(root, "state/banger/images/debian/rootfs.ext4")
	if n == 0 {
		if ws {
			return benchWorkspace(ctx, e, wsRounds)
		}
		return nil
	}

	var bangerTimes, bareTimes []time.Duration
	stages := map[string][]time.Duration{}
	var stageOrder []string
	for i := 0; i < n; i++ {
		t0 := time.Now()
		_, se, err := e.banger(ctx, "vm", "run", "--rm", "--", "true")
		if err != nil {
			return err
		}
		bangerTimes = append(bangerTimes, time.Since(t0))
		for _, l := range strings.Split(se, "\n") {
			f := strings.Fields(l)
			if len(f) == 2 {
				if d, err := time.ParseDuration(f[1]); err == nil {
					if _, seen := stages[f[0]]; !seen {
						stageOrder = append(stageOrder, f[0])
					}
					stages[f[0]] = append(stages[f[0]], d)
				}
			}
		}
		d, _, err := bareBoot(ctx, root, ref, rootfs, false)
		if err != nil {
			return err
		}
		bareTimes = append(bareTimes, d)
	}

	fmt.Println("banger stages (median of", n, "runs):")
	for _, s := range stageOrder {
		fmt.Printf("  %-16s %v\n", s, median(stages[s]).Round(time.Millisecond))
	}
	mb, mq := median(bangerTimes), median(bareTimes)
	fmt.Printf("banger vm run --rm -- true   median %v  (all: %v)\n", mb.Round(time.Millisecond), rounded(bangerTimes))
	fmt.Printf("bare qemu boot to init       median %v  (all: %v)\n", mq.Round(time.Millisecond), rounded(bareTimes))
	fmt.Printf("ratio banger/bare %.2f (target <= 1.25)\n", float64(mb)/float64(mq))

	_, rssBare, err := bareBoot(ctx, root, ref, rootfs, true)
	if err != nil {
		return err
	}
	fmt.Printf("qemu resident memory per VM: banger %d MiB (idle guest after boot), bare %d MiB (peak during boot); guest memory 512 MiB\n", rssBanger/1024, rssBare/1024)
	if ws {
		return benchWorkspace(ctx, e, wsRounds)
	}
	return nil
}

func ifSet(prefix, s string) string {
	if s == "" {
		return ""
	}
	return prefix + s
}

// vmmConfig is what the bare side copies from banger's VMM.
type vmmConfig struct {
	machine, accel, cpu, kernel, initrd string
}

// vmmArgs reads the machine, accelerator, CPU model, kernel and initramfs
// from the command line of the QEMU with pid.
func vmmArgs(pid int) (vmmConfig, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return vmmConfig{}, fmt.Errorf("read banger's VMM command line: %w", err)
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	var c vmmConfig
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "-machine", "-M":
			c.machine = args[i+1]
		case "-accel":
			c.accel = args[i+1]
		case "-cpu":
			c.cpu = args[i+1]
		case "-kernel":
			c.kernel = args[i+1]
		case "-initrd":
			c.initrd = args[i+1]
		}
	}
	if c.machine == "" || c.accel == "" || c.kernel == "" || c.initrd == "" {
		return c, fmt.Errorf("banger's VMM command line lacks -machine, -accel, -kernel or -initrd: %q", args)
	}
	return c, nil
}

// initExited is what the guest kernel prints when PID 1 (here /bin/true,
// started by banger's initramfs after switching to the image's root)
// exits with status 0: proof the boot reached init.
const initExited = "Attempted to kill init! exitcode=0x00000000"

// bareBoot boots the same artifacts with a hand-written QEMU command line
// using banger's machine, accelerator, kernel and initramfs: a throwaway
// overlay, init=/bin/true (PID 1 exits, the kernel panics, panic=-1 +
// -no-reboot end QEMU). A boot counts only if QEMU exits 0 and the console
// shows init ran. It returns the wall time from exec to exit and, if
// sample, the peak RSS.
func bareBoot(ctx context.Context, root string, c vmmConfig, rootfs string, sample bool) (time.Duration, int, error) {
	dir, err := os.MkdirTemp(root, "bare-")
	if err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(dir)
	overlay := filepath.Join(dir, "root.qcow2")
	if out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-b", rootfs, "-F", "raw", overlay).CombinedOutput(); err != nil {
		return 0, 0, fmt.Errorf("qemu-img: %v %s", err, out)
	}
	serial := filepath.Join(dir, "serial.log")
	khz := tscKHz()
	args := []string{"-machine", c.machine, "-accel", c.accel}
	if c.cpu != "" {
		args = append(args, "-cpu", c.cpu)
	}
	args = append(args,
		"-smp", "2", "-m", "512M", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-kernel", c.kernel, "-initrd", c.initrd,
		"-append", fmt.Sprintf("console=ttyS0 panic=-1 quiet banger.root=/dev/vda banger.init=/bin/true tsc_early_khz=%d", khz),
		"-drive", "id=root,file="+overlay+",format=qcow2,if=none", "-device", "virtio-blk-device,drive=root",
		"-serial", "file:"+serial,
	)
	var stderr bytes.Buffer
	t0 := time.Now()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	peak := 0
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	timeout := time.NewTimer(3 * time.Minute) // once, for the whole boot
	defer timeout.Stop()
	for {
		select {
		case err := <-done:
			d := time.Since(t0)
			log, _ := os.ReadFile(serial)
			if err != nil {
				return 0, 0, fmt.Errorf("bare qemu: %v\n%s\nconsole tail:\n%s", err, stderr.String(), tail(string(log), 20))
			}
			if !strings.Contains(string(log), initExited) {
				return 0, 0, fmt.Errorf("bare boot ended without reaching init (no %q on the console); console tail:\n%s", initExited, tail(string(log), 20))
			}
			return d, peak, nil
		case <-tick.C:
			if sample {
				if r := rssKiB(cmd.Process.Pid); r > peak {
					peak = r
				}
			}
		case <-timeout.C:
			cmd.Process.Kill()
			<-done
			log, _ := os.ReadFile(serial)
			return 0, 0, fmt.Errorf("bare boot did not finish within 3 minutes; console tail:\n%s", tail(string(log), 20))
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func tscKHz() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "cpu MHz" {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return int(f * 1000)
		}
	}
	return 0
}

func rssKiB(pid int) int {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "VmRSS:") {
			n, _ := strconv.Atoi(strings.Fields(sc.Text())[1])
			return n
		}
	}
	return 0
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func rounded(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(10 * time.Millisecond)
	}
	return out
}
