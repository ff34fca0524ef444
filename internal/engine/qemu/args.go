package qemu

import (
	"fmt"
	"strconv"
	"strings"

	"banger/internal/engine"
	"banger/internal/hosttools"
)

// MachineTCG and MachineKVM are the -machine values used for each
// accelerator. Measured on the reference host (QEMU 7.2, Debian 6.1 guest
// kernel, TCG):
//
//   - pit=off hangs a TCG guest at boot, every time: with neither a PIT nor
//     an HPET the kernel cannot calibrate the TSC ("tsc: Unable to calibrate
//     against PIT ... No reference (HPET/PMTIMER) available") and never
//     finishes timer setup. Under KVM the guest has kvmclock and needs no
//     legacy timer, so the PIT (and the PIC it wires to) are left to the
//     machine's default there.
//   - acpi=off plus pic=off hangs the same way ("Failed to register legacy
//     timer interrupt"); acpi=off alone boots but twice as slowly to the
//     root-mount point (4.7 s vs 1.5-2 s), and without ACPI a guest
//     "poweroff" cannot turn the machine off. ACPI stays at its default (on).
//   - rtc=on keeps the guest's wall clock right at boot.
//   - isa-serial=on is the ttyS0 the serial log is read from.
//   - x-option-roms=off skips loading option ROMs that a PVH kernel boot
//     never uses.
const (
	MachineTCG = "microvm,x-option-roms=off,isa-serial=on,rtc=on,pit=on,pic=on"
	MachineKVM = "microvm,x-option-roms=off,isa-serial=on,rtc=on"
)

// Disk and chardev ids used in the argv (and visible through QMP).
const (
	rootDriveID   = "root"
	workDriveID   = "work"
	agentCharID   = "agent"
	serialCharID  = "serial0"
	qmpCharID     = "qmp"
	balloonID     = "balloon0"
	defaultBinary = hosttools.QEMU
)

// BalloonDevice is the -device value of Spec.Balloon: a virtio-mmio
// balloon (id balloon0, reachable over QMP as /machine/peripheral/balloon0)
// with free page reporting, so pages the guest frees go back to the host
// (QEMU discards them with MADV_DONTNEED and the VMM's RSS falls), and
// deflate-on-oom, so a guest under pressure takes back memory a balloon
// target took. QEMU 7.2 accepts both properties on virtio-balloon-device.
const BalloonDevice = "virtio-balloon-device,id=" + balloonID + ",free-page-reporting=on,deflate-on-oom=on"

// ArgOptions carries host facts that shape the argv but are not part of a
// VM's Spec. The zero value is valid.
type ArgOptions struct {
	// Daemonize adds -daemonize: QEMU forks, detaches (setsid) and exits
	// once the VM is set up, leaving the VMM reparented to init. Without it
	// QEMU runs in the foreground. It cannot be combined with Sandbox
	// (QEMU 7.2 installs the filter before it forks and calls setsid).
	Daemonize bool
	// Sandbox turns on QEMU's seccomp filter (SandboxArg): no obsolete
	// system calls, no fork/exec, no changes to scheduling or CPU
	// affinity.
	Sandbox bool
	// RunAs ("UID:GID"), when set, makes QEMU drop to that user and group
	// (-runas) once every file, socket and tap is open, before the guest
	// runs. QEMU 7.2 applies the seccomp filter first, so the filter lets
	// the set*id calls of the drop through (elevateprivileges=allow);
	// after the drop every id is non-zero and the process has no
	// capabilities, so no set*id call can regain any.
	RunAs string
	// GuestTSCKHz, when non-zero and the accelerator is TCG, is passed to
	// the guest as tsc_early_khz=. Under TCG the guest's TSC runs at the
	// host TSC's rate, and the kernel's own calibration against the PIT is
	// timing-sensitive: on a loaded host it fails and the boot hangs
	// (measured: 3 of 3 boots hung with two busy host threads, 0 of 3 with
	// the hint). See HostTSCKHz.
	GuestTSCKHz int
	// DiskFDs makes QEMU open the root and work disks from descriptors
	// the caller passes (fdsets, see DiskFDFiles) instead of by path. A
	// QEMU that dropped its privileges (RunAs) cannot open its disks by
	// path again, which it does when it lets go of them at the end of a
	// migration (a snapshot): it then takes a copy of a descriptor from
	// the fdset instead.
	DiskFDs bool
}

// Disk descriptor layout with ArgOptions.DiskFDs: the files the caller
// passes, in order, from descriptor 3 (exec.Cmd.ExtraFiles): for each disk
// present (root, then work) one opened read-write and one read-only, in
// fdset 1 (root) and 2 (work).
const firstExtraFD = 3

// DiskFDFiles are the files, in descriptor order, that a QEMU started with
// ArgOptions.DiskFDs expects: for each disk of spec present (root, then
// work), the paths and whether to open them read-only.
func DiskFDFiles(spec engine.Spec) []DiskFD {
	var out []DiskFD
	for _, p := range []string{spec.RootDisk, spec.WorkDisk} {
		if p == "" {
			continue
		}
		out = append(out, DiskFD{Path: p}, DiskFD{Path: p, ReadOnly: true})
	}
	return out
}

// DiskFD is one disk descriptor to pass.
type DiskFD struct {
	Path     string
	ReadOnly bool
}

// KernelCmdline returns the kernel command line QEMU is given for spec: the
// caller's Cmdline followed by what this driver needs, each only if the
// caller did not set that parameter itself:
//
//   - console=ttyS0: the serial console is what Spec.SerialLog records;
//   - panic=-1: a kernel panic reboots at once, and since QEMU runs with
//     -no-reboot the VMM exits, so a panicked guest shows up as Done
//     instead of a VM that hangs forever;
//   - tsc_early_khz=N under TCG when opts.GuestTSCKHz is set (see
//     ArgOptions).
func KernelCmdline(spec engine.Spec, opts ArgOptions) string {
	parts := strings.Fields(spec.Cmdline)
	has := func(key string) bool {
		for _, p := range parts {
			if p == key || strings.HasPrefix(p, key+"=") {
				return true
			}
		}
		return false
	}
	var extra []string
	if !has("console") {
		extra = append(extra, "console=ttyS0")
	}
	if !has("panic") {
		extra = append(extra, "panic=-1")
	}
	if spec.Accel == engine.AccelTCG && opts.GuestTSCKHz > 0 && !has("tsc_early_khz") {
		extra = append(extra, "tsc_early_khz="+strconv.Itoa(opts.GuestTSCKHz))
	}
	return strings.Join(append(parts, extra...), " ")
}

// maxCmdline is the x86 kernel's COMMAND_LINE_SIZE less the NUL.
const maxCmdline = 2047

// BuildArgs returns QEMU's argv (without the binary) for spec. It is a pure
// function of its inputs. The VM it describes:
//
//   - a microvm machine (MachineTCG or MachineKVM), -accel kvm with
//     -cpu host, or -accel tcg,thread=multi with QEMU's default CPU model
//     (-cpu max hangs the guest under TCG on the reference host);
//   - -nodefaults -no-user-config -display none: no default devices,
//     config files or UI, so nothing is attached that the argv does not
//     name; -no-reboot, so a guest reboot (or panic) ends the VMM;
//   - disks as virtio-blk-device (virtio-mmio): root (qcow2) first, so it
//     is /dev/vda, then work (raw) as /dev/vdb; both cache=writeback (the
//     host page cache holds writes, guest flushes reach the disk; O_DIRECT
//     is avoided because it fails on tmpfs), aio=threads (works on every
//     filesystem and QEMU build) and discard=unmap (guest fstrim punches
//     holes, keeping overlays small);
//   - the agent's virtio-serial port, backed by a Unix socket on which QEMU
//     listens without waiting for a client;
//   - ttyS0 served on Spec.SerialSocket (QEMU listens without waiting;
//     with no client connected it drops the output, so the guest never
//     stalls), else written to Spec.SerialLog (truncated at start, no
//     size limit: for tests), or discarded;
//   - QMP on a Unix socket, listening without waiting;
//   - NICs as virtio-net-device: taps attached with script=no and vhost
//     off, user NICs with optional restrict=on and hostfwd rules;
//   - with Spec.Balloon, BalloonDevice.
func BuildArgs(spec engine.Spec, opts ArgOptions) ([]string, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	name := spec.Name
	if name == "" {
		name = spec.ID
	}
	a := []string{"-name", "guest=" + escape(name) + ",debug-threads=on"}

	switch spec.Accel {
	case engine.AccelKVM:
		a = append(a, "-machine", MachineKVM, "-accel", "kvm", "-cpu", "host")
	default:
		a = append(a, "-machine", MachineTCG, "-accel", "tcg,thread=multi")
	}
	a = append(a,
		"-smp", strconv.Itoa(spec.VCPU),
		"-m", strconv.Itoa(spec.MemoryMiB)+"M",
		"-nodefaults", "-no-user-config", "-display", "none",
		"-no-reboot",
	)

	if spec.Kernel != "" {
		cmdline := KernelCmdline(spec, opts)
		if len(cmdline) > maxCmdline {
			return nil, fmt.Errorf("kernel command line is %d bytes long; the limit is %d", len(cmdline), maxCmdline)
		}
		a = append(a, "-kernel", spec.Kernel)
		if spec.Initramfs != "" {
			a = append(a, "-initrd", spec.Initramfs)
		}
		a = append(a, "-append", cmdline)
	}

	fd, set := firstExtraFD, 1
	for _, d := range []struct{ id, path, format string }{
		{rootDriveID, spec.RootDisk, "qcow2"},
		{workDriveID, spec.WorkDisk, "raw"},
	} {
		if d.path == "" {
			continue
		}
		file := escape(d.path)
		if opts.DiskFDs {
			sid := strconv.Itoa(set)
			a = append(a,
				"-add-fd", "fd="+strconv.Itoa(fd)+",set="+sid,
				"-add-fd", "fd="+strconv.Itoa(fd+1)+",set="+sid,
			)
			// No image locks: banger runs one VMM per VM (Start checks),
			// and QEMU's locks on the set's two open files conflict with
			// each other when it takes its disks back after a migration
			// ("Failed to get \"write\" lock" on cont).
			file = "/dev/fdset/" + sid + ",file.locking=off"
			fd, set = fd+2, set+1
		}
		a = append(a,
			"-drive", "id="+d.id+",file="+file+",format="+d.format+",if=none,cache=writeback,aio=threads,discard=unmap",
			"-device", "virtio-blk-device,drive="+d.id,
		)
	}

	for i, n := range spec.NICs {
		id := "net" + strconv.Itoa(i)
		var netdev string
		if n.Tap != "" {
			netdev = "tap,id=" + id + ",ifname=" + n.Tap + ",script=no,downscript=no,vhost=off"
		} else {
			netdev = "user,id=" + id
			if n.Restrict {
				netdev += ",restrict=on"
			}
			for _, f := range n.HostFwds {
				netdev += ",hostfwd=" + hostfwd(f)
			}
		}
		dev := "virtio-net-device,netdev=" + id
		if n.MAC != "" {
			dev += ",mac=" + strings.ToLower(n.MAC)
		}
		a = append(a, "-netdev", netdev, "-device", dev)
	}

	if spec.AgentSocket != "" {
		port := spec.AgentPortName
		if port == "" {
			port = engine.DefaultAgentPort
		}
		a = append(a,
			"-device", "virtio-serial-device",
			"-chardev", "socket,id="+agentCharID+",path="+escape(spec.AgentSocket)+",server=on,wait=off",
			"-device", "virtserialport,chardev="+agentCharID+",name="+port,
		)
	}

	if spec.Balloon {
		a = append(a, "-device", BalloonDevice)
	}

	if spec.SerialSocket != "" {
		a = append(a,
			"-chardev", "socket,id="+serialCharID+",path="+escape(spec.SerialSocket)+",server=on,wait=off",
			"-serial", "chardev:"+serialCharID,
		)
	} else if spec.SerialLog != "" {
		a = append(a,
			"-chardev", "file,id="+serialCharID+",path="+escape(spec.SerialLog),
			"-serial", "chardev:"+serialCharID,
		)
	} else {
		a = append(a, "-serial", "null")
	}

	a = append(a,
		"-chardev", "socket,id="+qmpCharID+",path="+escape(spec.QMPSocket)+",server=on,wait=off",
		"-mon", "chardev="+qmpCharID+",mode=control",
		"-pidfile", spec.PIDFile,
	)
	if spec.VMMLog != "" {
		a = append(a, "-D", spec.VMMLog)
	}
	if opts.Sandbox {
		a = append(a, "-sandbox", SandboxArg())
	}
	if opts.RunAs != "" {
		a = append(a, "-runas", opts.RunAs)
	}
	if opts.Daemonize {
		a = append(a, "-daemonize")
	}
	return a, nil
}

// SandboxArg is the value of QEMU's -sandbox option banger uses: seccomp on,
// denying obsolete system calls, process creation (fork, exec: QMP migrate
// to "exec:" is impossible with it) and scheduler and resource changes.
//
// set*id calls are allowed (elevateprivileges=allow), for two measured
// reasons (QEMU 7.2): the filter is installed before -runas changes the
// user, so the drop of a root daemon's VMM needs them; and with
// elevateprivileges=deny the guest of an unprivileged VMM (the privileged
// helper's setup) never answered on its network (its sshd stayed silent in
// two runs of TestPrivHelper, and answered with allow; the cause was not
// found). Neither VMM can gain anything from them: one runs as a user
// without capabilities, the other has dropped every id to non-zero ones.
func SandboxArg() string {
	return "on,obsolete=deny,elevateprivileges=allow,spawn=deny,resourcecontrol=deny"
}

// hostfwd renders one forward as QEMU's
// [tcp|udp]:hostaddr:hostport-guestaddr:guestport.
func hostfwd(f engine.HostFwd) string {
	proto := f.Proto
	if proto == "" {
		proto = "tcp"
	}
	host := f.HostAddr
	if host == "" {
		host = "127.0.0.1"
	}
	return fmt.Sprintf("%s:%s:%d-%s:%d", proto, host, f.HostPort, f.GuestAddr, f.GuestPort)
}

// escape doubles commas, QEMU's escape inside a key=value option list.
func escape(s string) string { return strings.ReplaceAll(s, ",", ",,") }
