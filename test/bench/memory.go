package main

// The memory part of the benchmark: what an idle VM costs the host against
// what its guest uses, with and without the virtio balloon's free page
// reporting (config balloon = true, the default, or false), and the total
// for several idle VMs. It runs in an installation of its own, so it does
// not depend on the boot comparison's.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

const (
	// memIdle is how long a VM sits idle after `vm create` before it is
	// measured (the figure issue 17 reported was taken 20 s after create).
	memIdle = 20 * time.Second
	// memVMMiB is the measured VMs' memory: banger's default size.
	memVMMiB = 1024
	// memFleet is how many idle VMs the total is taken over.
	memFleet = 4
)

type memEnv struct {
	bin, root, config string
	environ           []string
}

func (e *memEnv) banger(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(e.bin, "banger"), args...)
	cmd.Env = e.environ
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("banger %s: %v\n%s", strings.Join(args, " "), err, se.String())
	}
	return so.String(), nil
}

// setBalloon rewrites the config and restarts the daemon, which reads
// balloon at every VM start.
func (e *memEnv) setBalloon(ctx context.Context, on bool) error {
	cfg := fmt.Sprintf("vcpu = 2\nmemory_mib = %d\ndisk_size = \"1G\"\nnetwork = \"none\"\ndns_listen = \"127.0.0.1:0\"\nballoon = %t\n", memVMMiB, on)
	if err := os.WriteFile(e.config, []byte(cfg), 0o600); err != nil {
		return err
	}
	e.banger(ctx, "daemon", "stop")
	return nil
}

type memFigures struct {
	HostRSS    int64  `json:"host_rss"`
	GuestTotal int64  `json:"guest_total"`
	GuestUsed  int64  `json:"guest_used"`
	Balloon    string `json:"balloon"`
	Error      string `json:"guest_error"`
	// GuestRAM is the resident part of the VMM's guest RAM mapping.
	GuestRAM int64 `json:"-"`
}

// guestRAMRSS reads the Rss of pid's mapping of exactly memVMMiB (guest
// RAM) from /proc/PID/smaps; 0 if it cannot.
func guestRAMRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return 0
	}
	size := int64(-1)
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) == 3 && f[0] == "Size:":
			size, _ = strconv.ParseInt(f[1], 10, 64)
		case len(f) == 3 && f[0] == "Rss:" && size == memVMMiB<<10:
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n << 10
		}
	}
	return 0
}

func (e *memEnv) memory(ctx context.Context, name string) (memFigures, error) {
	out, err := e.banger(ctx, "vm", "show", "--json", name)
	if err != nil {
		return memFigures{}, err
	}
	var v struct {
		PID    int         `json:"pid"`
		Memory *memFigures `json:"memory_usage"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		return memFigures{}, err
	}
	if v.Memory == nil || v.Memory.Error != "" || v.Memory.GuestUsed == 0 {
		return memFigures{}, fmt.Errorf("vm %s: no memory figures: %s", name, out)
	}
	v.Memory.GuestRAM = guestRAMRSS(v.PID)
	return *v.Memory, nil
}

// idleVMs creates n VMs, lets them sit memIdle, measures and deletes them.
func (e *memEnv) idleVMs(ctx context.Context, prefix string, n int) ([]memFigures, error) {
	var names []string
	defer func() {
		for _, name := range names {
			e.banger(context.Background(), "vm", "delete", name)
		}
	}()
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("%s%d", prefix, i)
		if _, err := e.banger(ctx, "vm", "create", "--name", name); err != nil {
			return nil, err
		}
		names = append(names, name)
	}
	time.Sleep(memIdle)
	var out []memFigures
	for _, name := range names {
		m, err := e.memory(ctx, name)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// benchMemory prints, for an idle VM memIdle after create, the VMM's RSS,
// the guest's use (MemTotal - MemFree) and their difference with and
// without the balloon, then the total RSS of memFleet idle VMs with it.
func benchMemory(ctx context.Context, bin, fixtures string) error {
	if bin == "" || fixtures == "" {
		return fmt.Errorf("set BANGER_BIN and BANGER_FIXTURES (use `make bench`)")
	}
	root, err := os.MkdirTemp("", "banger-bench-mem-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	e := &memEnv{bin: bin, root: root, config: filepath.Join(root, "config/banger/config.toml"), environ: append(os.Environ(),
		"XDG_STATE_HOME="+root+"/state", "XDG_CONFIG_HOME="+root+"/config", "XDG_RUNTIME_DIR="+root+"/run")}
	os.MkdirAll(filepath.Dir(e.config), 0o700)
	os.MkdirAll(root+"/run", 0o700) // XDG_RUNTIME_DIR must exist
	defer e.banger(context.Background(), "daemon", "stop")
	if err := e.setBalloon(ctx, true); err != nil {
		return err
	}
	if _, err := e.banger(ctx, "kernel", "import", "debian", "--from", fixtures+"/kernel/linux-image.deb"); err != nil {
		return err
	}
	if _, err := e.banger(ctx, "image", "build", "debian", "--from-dir", fixtures+"/rootfs", "--size", "2G"); err != nil {
		return err
	}

	fmt.Printf("memory of one idle VM (%d MiB, %v after create): VMM RSS, guest used (MemTotal-MemFree), difference\n", memVMMiB, memIdle)
	for _, on := range []bool{true, false} {
		if err := e.setBalloon(ctx, on); err != nil {
			return err
		}
		ms, err := e.idleVMs(ctx, map[bool]string{true: "mem-on", false: "mem-off"}[on], 1)
		if err != nil {
			return err
		}
		m := ms[0]
		fmt.Printf("  balloon %-5t rss %4d MiB  guest used %4d MiB  difference %4d MiB  (guest balloon: %s)\n",
			on, m.HostRSS>>20, m.GuestUsed>>20, (m.HostRSS-m.GuestUsed)>>20, m.Balloon)
		held := int64(memVMMiB)<<20 - (m.GuestTotal - m.GuestUsed)
		fmt.Printf("      of the rss: guest RAM resident %4d MiB (guest holds %d MiB incl. kernel-reserved), VMM itself + TCG translation cache %4d MiB\n",
			m.GuestRAM>>20, held>>20, (m.HostRSS-m.GuestRAM)>>20)
	}
	if err := e.setBalloon(ctx, true); err != nil {
		return err
	}
	ms, err := e.idleVMs(ctx, "fleet", memFleet)
	if err != nil {
		return err
	}
	var rss, used, ram int64
	for _, m := range ms {
		rss += m.HostRSS
		used += m.GuestUsed
		ram += m.GuestRAM
	}
	fmt.Printf("%d idle VMs with the balloon: total RSS %d MiB, guests use %d MiB, difference %d MiB per VM (target under TCG: <= 96); guest RAM resident %d MiB\n",
		memFleet, rss>>20, used>>20, (rss-used)>>20/memFleet, ram>>20)
	return nil
}
