// Command bench compares booting through banger with booting the same
// kernel, initramfs and image with a bare, hand-written QEMU command line,
// in the same run, several times each. It prints banger's stage breakdown,
// both medians, their ratio and the QEMU process's resident memory per VM.
//
//	BANGER_BIN=bin BANGER_FIXTURES=/var/cache/banger-fixtures go run ./test/bench [-n 5]
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
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
	flag.Parse()
	if !*memOnly {
		if err := run(*n, *ws); err != nil {
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

func run(n int, ws bool) error {
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
	var kinfo struct{ Vmlinux, Initramfs string }
	out, _, err := e.banger(ctx, "kernel", "show", "debian")
	if err != nil {
		return err
	}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) == 2 && f[0] == "vmlinux" {
			kinfo.Vmlinux = f[1]
		}
	}
	initrds, _ := filepath.Glob(filepath.Join(filepath.Dir(kinfo.Vmlinux), "initrd-*.img"))
	if len(initrds) == 0 {
		return fmt.Errorf("no initrd variant next to %s", kinfo.Vmlinux)
	}
	kinfo.Initramfs = initrds[0]
	rootfs := filepath.Join(root, "state/banger/images/debian/rootfs.ext4")

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
		d, _, err := bareBoot(ctx, root, kinfo.Vmlinux, kinfo.Initramfs, rootfs, false)
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

	// Resident memory of the VMM per VM: a banger VM at rest after a
	// command, and the bare VMM at its peak.
	if _, _, err := e.banger(ctx, "vm", "create", "--name", "rss"); err != nil {
		return err
	}
	e.banger(ctx, "vm", "exec", "rss", "--", "true")
	js, _, _ := e.banger(ctx, "vm", "show", "--json", "rss")
	var v struct{ PID int }
	json.Unmarshal([]byte(js), &v)
	rssBanger := rssKiB(v.PID)
	e.banger(ctx, "vm", "delete", "rss")
	_, rssBare, err := bareBoot(ctx, root, kinfo.Vmlinux, kinfo.Initramfs, rootfs, true)
	if err != nil {
		return err
	}
	fmt.Printf("qemu resident memory per VM: banger %d MiB (idle guest after boot), bare %d MiB (peak during boot); guest memory 512 MiB\n", rssBanger/1024, rssBare/1024)
	if ws {
		return benchWorkspace(ctx, e)
	}
	return nil
}

// benchWorkspace times a workspace prepare of a generated repository
// (10,000 files, 100 MiB) against `git archive HEAD | banger vm exec NAME
// -- tar x` on the same repository and VM.
func benchWorkspace(ctx context.Context, e *env) error {
	const files, size = 10000, 10 << 10
	repo := filepath.Join(e.root, "wsrepo")
	for i := 0; i < files; i++ {
		p := filepath.Join(repo, fmt.Sprintf("d%02d/f%05d.dat", i%100, i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		b := make([]byte, size)
		rand.Read(b)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return err
		}
	}
	git := func(args ...string) error {
		cmd := exec.Command("git", append([]string{"-C", repo}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=b", "GIT_AUTHOR_EMAIL=b@b", "GIT_COMMITTER_NAME=b", "GIT_COMMITTER_EMAIL=b@b")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("git %v: %v %s", args, err, out)
		}
		return nil
	}
	if err := git("init", "-q"); err != nil {
		return err
	}
	if err := git("add", "."); err != nil {
		return err
	}
	if err := git("commit", "-qm", "bench"); err != nil {
		return err
	}
	if _, _, err := e.banger(ctx, "vm", "create", "--name", "wsbench", "--disk-size", "2G"); err != nil {
		return err
	}
	defer e.banger(ctx, "vm", "delete", "wsbench")
	mib := float64(files*size) / (1 << 20)
	t0 := time.Now()
	if _, _, err := e.banger(ctx, "vm", "workspace", "prepare", "wsbench", repo); err != nil {
		return err
	}
	dPrep := time.Since(t0)
	e.banger(ctx, "vm", "exec", "wsbench", "--", "mkdir", "-p", "/root/archive")
	t0 = time.Now()
	cmd := exec.CommandContext(ctx, "sh", "-c", fmt.Sprintf("git -C %s archive HEAD | %s vm exec wsbench -- tar x -C /root/archive", repo, filepath.Join(e.bin, "banger")))
	cmd.Env = e.environ
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("git archive | tar x: %v %s", err, out)
	}
	dTar := time.Since(t0)
	fmt.Printf("workspace prepare (10000 files, %.0f MiB): %v = %.0f files/s, %.1f MiB/s\n", mib, dPrep.Round(time.Millisecond), files/dPrep.Seconds(), mib/dPrep.Seconds())
	fmt.Printf("git archive | vm exec tar x (same repo):  %v = %.0f files/s, %.1f MiB/s\n", dTar.Round(time.Millisecond), files/dTar.Seconds(), mib/dTar.Seconds())
	return nil
}

// bareBoot boots the same artifacts with a hand-written QEMU command line:
// a throwaway overlay, init=/bin/true (PID 1 exits, the kernel panics,
// panic=-1 + -no-reboot end QEMU). It returns the wall time from exec to
// exit and, if sample, the peak RSS.
func bareBoot(ctx context.Context, root, vmlinux, initrd, rootfs string, sample bool) (time.Duration, int, error) {
	dir, err := os.MkdirTemp(root, "bare-")
	if err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(dir)
	overlay := filepath.Join(dir, "root.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", rootfs, "-F", "raw", overlay).CombinedOutput(); err != nil {
		return 0, 0, fmt.Errorf("qemu-img: %v %s", err, out)
	}
	khz := tscKHz()
	args := []string{
		"-M", "microvm,x-option-roms=off,isa-serial=on,rtc=on,pit=on,pic=on", "-accel", "tcg,thread=multi",
		"-smp", "2", "-m", "512M", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-kernel", vmlinux, "-initrd", initrd,
		"-append", fmt.Sprintf("console=ttyS0 panic=-1 quiet banger.root=/dev/vda banger.init=/bin/true tsc_early_khz=%d", khz),
		"-drive", "id=root,file=" + overlay + ",format=qcow2,if=none", "-device", "virtio-blk-device,drive=root",
		"-serial", "file:" + filepath.Join(dir, "serial.log"),
	}
	t0 := time.Now()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	peak := 0
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return time.Since(t0), peak, nil
		case <-tick.C:
			if sample {
				if r := rssKiB(cmd.Process.Pid); r > peak {
					peak = r
				}
			}
		case <-time.After(3 * time.Minute):
			cmd.Process.Kill()
			return 0, 0, fmt.Errorf("bare boot did not finish")
		}
	}
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
