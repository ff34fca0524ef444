package doctor

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Free-space thresholds on the state dir's filesystem, which holds the
// images, kernels and every VM's disks.
const (
	diskWarnBytes = 10 << 30
	diskFailBytes = 2 << 30
)

// statfsFunc reports the bytes available to this user and the size of the
// filesystem holding path.
type statfsFunc func(path string) (avail, total uint64, err error)

func statfs(path string) (avail, total uint64, err error) {
	var s unix.Statfs_t
	if err := unix.Statfs(path, &s); err != nil {
		return 0, 0, err
	}
	return s.Bavail * uint64(s.Bsize), s.Blocks * uint64(s.Bsize), nil
}

// checkDisk reports the free space on the filesystem that holds dir (or
// its nearest existing parent).
func checkDisk(dir string, sf statfsFunc) Check {
	c := Check{Name: "disk space"}
	p := dir
	for {
		if _, err := os.Stat(p); err == nil || !errors.Is(err, fs.ErrNotExist) || filepath.Dir(p) == p {
			break
		}
		p = filepath.Dir(p)
	}
	avail, total, err := sf(p)
	if err != nil {
		c.Status, c.Detail = Warn, fmt.Sprintf("cannot read the free space of %s: %v", p, err)
		return c
	}
	c.Detail = fmt.Sprintf("%s free of %s on the filesystem holding %s", gib(avail), gib(total), dir)
	fix := "free space there (banger vm prune deletes stopped VMs; banger image rm / kernel rm unused ones), or move banger's state to a larger filesystem with XDG_STATE_HOME"
	switch {
	case avail < diskFailBytes:
		c.Status, c.Fix = Fail, fix
		c.Detail += fmt.Sprintf(": below %s, VM disks and image pulls will fail", gib(diskFailBytes))
	case avail < diskWarnBytes:
		c.Status, c.Fix = Warn, fix
		c.Detail += fmt.Sprintf(": below %s, enough for a few VMs only", gib(diskWarnBytes))
	default:
		c.Status = Pass
	}
	return c
}

func gib(b uint64) string { return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30)) }
