package guest

import (
	"errors"
	"fmt"
	"io/fs"
	"log"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// rootDir is a directory the guest needs in its root file system.
type rootDir struct {
	name string
	perm fs.FileMode
	// essential: booting is impossible without it (something is mounted
	// on it); the others are created on a best-effort basis.
	essential bool
}

// rootDirs are the directories the agent, an init system and ordinary
// programs take for granted. Images made FROM scratch often have none of
// them.
var rootDirs = []rootDir{
	{"dev", 0o755, true},
	{"proc", 0o555, true},
	{"sys", 0o555, true},
	{"run", 0o755, true},
	{"tmp", 0o777 | fs.ModeSticky, false},
	{"root", 0o700, false},
	{"etc", 0o755, false},
}

// rootFiles are files created, with this content, only when the image has
// none: enough for name lookups of localhost and root.
var rootFiles = []struct{ name, content string }{
	{"etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"},
	{"etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"},
	{"etc/group", "root:x:0:\n"},
}

// PrepareRoot makes sure the new root has every directory and file the
// guest needs, creating what the image lacks. root is the VM's root disk,
// a copy-on-write overlay of its own, so the image is never changed.
//
// Every path is resolved through root: a symbolic link in the image can
// redirect a path inside the image, but never out of it (an absolute or
// escaping link is refused). A missing essential directory that cannot be
// made (dev, proc, sys, run: something is mounted there) is an error;
// anything else is logged and the boot goes on without it.
func PrepareRoot(root *os.Root, lg *log.Logger) error {
	for _, d := range rootDirs {
		if err := ensureDir(root, d.name, d.perm); err != nil {
			if d.essential {
				return fmt.Errorf("prepare /%s: %w", d.name, err)
			}
			lg.Printf("prepare /%s: %v", d.name, err)
		}
	}
	for _, f := range rootFiles {
		if err := ensureFile(root, f.name, []byte(f.content), 0o644); err != nil {
			lg.Printf("prepare /%s: %v", f.name, err)
		}
	}
	return nil
}

// ensureDir makes name (and its parents) a directory inside root when it
// does not exist. The mode of an existing directory is left alone.
func ensureDir(root *os.Root, name string, perm fs.FileMode) error {
	fi, err := root.Stat(name)
	if err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s exists and is not a directory", name)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if _, lerr := root.Lstat(name); lerr == nil {
		// A dangling symbolic link: its target is the image's business.
		return fmt.Errorf("%s is a dangling symbolic link", name)
	}
	if err := root.MkdirAll(name, perm.Perm()); err != nil {
		return err
	}
	// The umask took bits away; the sticky bit needs chmod anyway.
	return root.Chmod(name, perm)
}

// ensureFile creates name with data when nothing (not even a dangling
// symbolic link) is there; an existing file is kept as it is.
func ensureFile(root *os.Root, name string, data []byte, perm fs.FileMode) error {
	if _, err := root.Lstat(name); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := ensureDir(root, path.Dir(name), 0o755); err != nil {
		return err
	}
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// replaceFile writes data to name inside root, replacing whatever was
// there, including a symbolic link (e.g. resolv.conf pointing into a
// resolver's /run) rather than writing through it. The parent directory is
// made when missing.
func replaceFile(root *os.Root, name string, data []byte, perm fs.FileMode) error {
	if err := ensureDir(root, path.Dir(name), 0o755); err != nil {
		return err
	}
	if fi, err := root.Lstat(name); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		if err := root.Remove(name); err != nil {
			return err
		}
	}
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_NOFOLLOW, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// mountIn mounts onto the directory name inside root. The directory is
// opened through root, so a symbolic link in the image cannot send the
// mount anywhere outside it, and the mount goes to that open directory
// (/proc/self/fd/N), never to a path resolved again afterwards.
func mountIn(root *os.Root, name, source, fstype string, flags uintptr, data string) error {
	f, err := root.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", name)
	}
	return unix.Mount(source, fmt.Sprintf("/proc/self/fd/%d", f.Fd()), fstype, flags, data)
}

// setHostname sets the kernel's hostname and records it in the new root's
// /etc/hostname and /etc/hosts (127.0.1.1, as Debian does).
func setHostname(lg *log.Logger, root *os.Root, name string) {
	if err := unix.Sethostname([]byte(name)); err != nil {
		lg.Printf("sethostname: %v", err)
	}
	if err := replaceFile(root, "etc/hostname", []byte(name+"\n"), 0o644); err != nil {
		lg.Printf("write /etc/hostname: %v", err)
	}
	b, _ := root.ReadFile("etc/hosts")
	if len(b) > 1<<20 {
		lg.Printf("/etc/hosts is larger than 1 MiB; left alone")
		return
	}
	line := "127.0.1.1\t" + name
	if strings.Contains(string(b), line) {
		return
	}
	var kept []string
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if !strings.HasPrefix(l, "127.0.1.1") && l != "" {
			kept = append(kept, l)
		}
	}
	if len(kept) == 0 {
		kept = append(kept, "127.0.0.1\tlocalhost")
	}
	kept = append(kept, line)
	if err := replaceFile(root, "etc/hosts", []byte(strings.Join(kept, "\n")+"\n"), 0o644); err != nil {
		lg.Printf("write /etc/hosts: %v", err)
	}
}
