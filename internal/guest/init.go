package guest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/agent"
)

// Paths inside banger's initramfs (see internal/kernel.Build).
const (
	modulesList = "/etc/banger/modules"
	newRoot     = "/newroot"
	// AgentPath is where the agent copies itself in the new root's /run.
	AgentPath = "/run/banger/banger-agent"
	// SessionDir keeps guest sessions' metadata and output: a tmpfs that
	// outlives host daemon restarts and client disconnects.
	SessionDir = "/run/banger/sessions"
)

// BootParams are banger's kernel command line parameters.
type BootParams struct {
	Root     string // banger.root, default /dev/vda
	Work     string // banger.work, device mounted at /root (optional)
	Hostname string // banger.name
	Init     string // banger.init, overrides the image's init
	IP       string // banger.ip, ADDR/PREFIX for eth0 (later: network issue)
	Gateway  string // banger.gw
	DNS      string // banger.dns
}

// ParseCmdline extracts banger's parameters from a kernel command line.
func ParseCmdline(cmdline string) BootParams {
	p := BootParams{Root: "/dev/vda"}
	for _, f := range strings.Fields(cmdline) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		switch k {
		case "banger.root":
			p.Root = v
		case "banger.work":
			p.Work = v
		case "banger.name":
			p.Hostname = v
		case "banger.init":
			p.Init = v
		case "banger.ip":
			p.IP = v
		case "banger.gw":
			p.Gateway = v
		case "banger.dns":
			p.DNS = v
		}
	}
	return p
}

// IsInitramfs reports whether this process is PID 1 of banger's initramfs.
func IsInitramfs() bool {
	if os.Getpid() != 1 {
		return false
	}
	_, err := os.Stat(modulesList)
	return err == nil
}

// Init brings the guest up from the initramfs: it mounts the kernel file
// systems, loads the modules, mounts the root and work disks and hands over
// to the image's init, leaving itself behind as a systemd unit under /run.
// When the image has no systemd, it stays PID 1 and serves the host itself.
// It only returns on failure.
func Init(lg *log.Logger) error {
	start := time.Now()
	if err := mountKernelFS(""); err != nil {
		return err
	}
	cmdline, _ := os.ReadFile("/proc/cmdline")
	p := ParseCmdline(string(cmdline))

	if err := loadModules(lg, string(cmdline)); err != nil {
		return err
	}
	lg.Printf("modules loaded in %v", time.Since(start).Round(time.Millisecond))

	if err := waitDevice(p.Root, 10*time.Second); err != nil {
		return err
	}
	os.MkdirAll(newRoot, 0o755)
	if err := unix.Mount(p.Root, newRoot, "ext4", 0, ""); err != nil {
		return fmt.Errorf("mount root %s: %w", p.Root, err)
	}
	// Every path in the image is reached through root, so that no
	// symbolic link in it can send a write or a mount outside it.
	root, err := os.OpenRoot(newRoot)
	if err != nil {
		return fmt.Errorf("open root: %w", err)
	}
	defer root.Close()
	if err := PrepareRoot(root, lg); err != nil {
		return err
	}
	if p.Work != "" {
		if err := mountWork(root, p.Work); err != nil {
			return err
		}
	}
	if p.Hostname != "" {
		setHostname(lg, root, p.Hostname)
	}
	// Per-VM SSH host keys, made before the image's sshd ever starts.
	if _, err := EnsureHostKeys(newRoot); err != nil {
		lg.Printf("ssh host keys: %v", err)
	}
	netCfg, err := ParseNet(p)
	if err != nil {
		return err
	}
	if err := ConfigureNet(netCfg); err != nil {
		return err
	}
	if err := WriteResolvConf(root, netCfg.DNS); err != nil {
		lg.Printf("write /etc/resolv.conf: %v", err)
	}

	init := p.Init
	if init == "" {
		init = findInit()
	}
	systemd := init != "" && isSystemd(init)
	if err := mountIn(root, "run", "tmpfs", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755"); err != nil {
		return fmt.Errorf("mount /run: %w", err)
	}
	if err := installAgent(root); err != nil {
		return err
	}
	lg.Printf("root ready in %v; handing over to %s", time.Since(start).Round(time.Millisecond), orDefault(init, "banger-agent (no init in image)"))

	// /proc last: the other targets are named through it.
	for _, m := range []string{"dev", "sys", "proc"} {
		if err := mountIn(root, m, "/"+m, "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("move /%s into new root: %w", m, err)
		}
	}
	if err := os.Chdir(newRoot); err != nil {
		return err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move new root to /: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	os.Chdir("/")
	root.Close()
	if systemd {
		// Start the agent now, as a child that survives the exec of
		// init, so the host can reach the guest long before the init
		// system has finished booting. The leading '@' in argv[0] tells
		// systemd not to kill it at shutdown before the final sync.
		agentProc := exec.Command(AgentPath, "serve")
		agentProc.Args[0] = "@banger-agent"
		agentProc.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := agentProc.Start(); err != nil {
			return fmt.Errorf("start agent: %w", err)
		}
		return unix.Exec(init, []string{init}, os.Environ())
	}
	if p.Init != "" {
		// An init chosen on the command line that is not systemd runs
		// as PID 1 as it is (used by benchmarks and debugging).
		return unix.Exec(init, []string{init}, os.Environ())
	}
	// No init system: stay PID 1 as the agent in the new root.
	return unix.Exec(AgentPath, []string{AgentPath, "pid1"}, os.Environ())
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func mountKernelFS(root string) error {
	for _, m := range []struct{ src, dir, fs string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
	} {
		dir := filepath.Join(root, m.dir)
		os.MkdirAll(dir, 0o755)
		if err := unix.Mount(m.src, dir, m.fs, unix.MS_NOSUID, ""); err != nil && err != unix.EBUSY {
			return fmt.Errorf("mount %s: %w", dir, err)
		}
	}
	return nil
}

// loadModules loads the initramfs's modules in order, each with the
// parameters the kernel command line gives it (module.param=value), as
// modprobe would: e.g. virtio_mmio.device= from a VMM that describes its
// devices on the command line.
func loadModules(lg *log.Logger, cmdline string) error {
	f, err := os.Open(modulesList)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		path := strings.TrimSpace(sc.Text())
		if path == "" || strings.HasPrefix(path, "#") {
			continue
		}
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		mf, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("load module %s: %w", path, err)
		}
		name, _, _ := strings.Cut(filepath.Base(path), ".ko")
		err = unix.FinitModule(int(mf.Fd()), moduleParams(cmdline, strings.ReplaceAll(name, "-", "_")), 0)
		mf.Close()
		if err != nil && err != unix.EEXIST {
			return fmt.Errorf("load module %s: %w", path, err)
		}
	}
	return sc.Err()
}

func waitDevice(dev string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(dev); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("device %s did not appear within %v", dev, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// mountWork mounts the VM's persistent work disk over /root. On its first
// boot the disk is seeded with the image's own /root (dotfiles and all).
func mountWork(root *os.Root, dev string) error {
	if err := waitDevice(dev, 10*time.Second); err != nil {
		return err
	}
	const stage = "/work"
	os.MkdirAll(stage, 0o755)
	if err := unix.Mount(dev, stage, "ext4", 0, ""); err != nil {
		return fmt.Errorf("mount work disk %s: %w", dev, err)
	}
	marker := filepath.Join(stage, ".banger-seeded")
	if _, err := os.Stat(marker); err != nil {
		if err := seedWork(root, stage); err != nil {
			return fmt.Errorf("seed work disk: %w", err)
		}
		os.Remove(filepath.Join(stage, "lost+found"))
		os.Chmod(stage, 0o700)
		if err := os.WriteFile(marker, nil, 0o600); err != nil {
			return err
		}
	}
	if err := ensureDir(root, "root", 0o700); err != nil {
		return fmt.Errorf("work disk: /root: %w", err)
	}
	if err := mountIn(root, "root", stage, "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move work disk to /root: %w", err)
	}
	return nil
}

// seedWork copies the image's /root, when it has one, to the work disk at
// stage.
func seedWork(root *os.Root, stage string) error {
	src, err := root.OpenRoot("root")
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenRoot(stage)
	if err != nil {
		return err
	}
	defer dst.Close()
	return copyTree(src, dst)
}

// copyTree copies a small directory tree (the image's /root), keeping
// modes, ownership and symlinks. Both sides are confined to their roots.
func copyTree(src, dst *os.Root) error {
	return fs.WalkDir(src.FS(), ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			if name != "." {
				if err := dst.Mkdir(name, info.Mode().Perm()); err != nil && !errors.Is(err, fs.ErrExist) {
					return err
				}
			}
		case info.Mode()&fs.ModeSymlink != 0:
			link, err := src.Readlink(name)
			if err != nil {
				return err
			}
			if err := dst.Symlink(link, name); err != nil {
				return err
			}
		case info.Mode().IsRegular():
			in, err := src.Open(name)
			if err != nil {
				return err
			}
			out, err := dst.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|unix.O_NOFOLLOW, info.Mode().Perm())
			if err != nil {
				in.Close()
				return err
			}
			_, err = io.Copy(out, in)
			in.Close()
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		default:
			return nil
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			dst.Lchown(name, int(st.Uid), int(st.Gid))
		}
		if !d.IsDir() && info.Mode()&fs.ModeSymlink == 0 {
			dst.Chmod(name, info.Mode())
		}
		return nil
	})
}

// findInit returns the image's init, or "" when it has none.
func findInit() string {
	for _, c := range []string{"/sbin/init", "/lib/systemd/systemd", "/usr/lib/systemd/systemd"} {
		if _, err := os.Stat(filepath.Join(newRoot, c)); err == nil {
			return c
		}
	}
	return ""
}

// isSystemd reports whether init (a path in the new root) is systemd.
func isSystemd(init string) bool {
	p := filepath.Join(newRoot, init)
	for i := 0; i < 8; i++ {
		link, err := os.Readlink(p)
		if err != nil {
			break
		}
		if !filepath.IsAbs(link) {
			link = filepath.Join(filepath.Dir(strings.TrimPrefix(p, newRoot)), link)
		}
		p = filepath.Join(newRoot, link)
	}
	return strings.HasSuffix(p, "/systemd")
}

// installAgent copies this binary into the new root's /run, a tmpfs that
// leaves the image untouched and vanishes at shutdown.
func installAgent(root *os.Root) error {
	self, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		return fmt.Errorf("read own binary: %w", err)
	}
	dst := strings.TrimPrefix(AgentPath, "/")
	if err := root.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("install agent: %w", err)
	}
	if err := root.WriteFile(dst, self, 0o755); err != nil {
		return fmt.Errorf("install agent: %w", err)
	}
	return nil
}

// moduleParams collects "module.param=value" words of cmdline for module.
func moduleParams(cmdline, module string) string {
	var out []string
	for _, f := range strings.Fields(cmdline) {
		mod, p, ok := strings.Cut(f, ".")
		if ok && p != "" && !strings.HasPrefix(p, "=") && strings.ReplaceAll(mod, "-", "_") == module {
			out = append(out, p)
		}
	}
	return strings.Join(out, " ")
}

// AgentTransport is where the agent serves the host: "vsock" when the VM
// has a virtio vsock device (Firecracker VMs; or the kernel command line
// says banger.agent=vsock), else the virtio-serial port. It looks for the
// device itself (virtio device id 19) rather than /dev/vsock, which exists
// in every guest that loaded the vsock modules.
func AgentTransport() string {
	b, _ := os.ReadFile("/proc/cmdline")
	for _, f := range strings.Fields(string(b)) {
		switch f {
		case "banger.agent=vsock":
			return "vsock"
		case "banger.agent=port":
			return "port"
		}
	}
	if hasVirtioDevice("/sys/bus/virtio/devices", 19) {
		return "vsock"
	}
	return "port"
}

// hasVirtioDevice reports whether a virtio device with the given device id
// is present under dir.
func hasVirtioDevice(dir string, id int) bool {
	matches, _ := filepath.Glob(filepath.Join(dir, "*", "device"))
	want := fmt.Sprintf("0x%04x", id)
	for _, m := range matches {
		if b, err := os.ReadFile(m); err == nil && strings.TrimSpace(string(b)) == want {
			return true
		}
	}
	return false
}

// Serve serves the host on the transport AgentTransport picks.
func (s *Server) Serve(ctx context.Context) error {
	if AgentTransport() == "vsock" {
		return s.ServeVsock(ctx, agent.VsockPort)
	}
	return s.ServePort(ctx, agent.PortName)
}
