// Package memstat reads the two memory figures banger shows for a VM: the
// host memory its VMM process holds (VmRSS in /proc/PID/status) and what
// its guest uses (the guest's /proc/meminfo, as text the guest agent
// sends). Both inputs are treated as hostile (the guest writes one, a VMM a
// guest may have subverted names the other's process): reads are bounded,
// lines are length-checked, values are range-checked, and anything
// unexpected is an error rather than a guess.
package memstat

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// MaxMeminfo is the most of a guest's /proc/meminfo text that is read; a
// real one is about 1.5 KiB. The guest agent sends at most this much.
const MaxMeminfo = 16 << 10

// maxStatus bounds /proc/PID/status (about 1.5 KiB in practice).
const maxStatus = 64 << 10

// maxLine bounds one line of either file.
const maxLine = 512

// maxKiB is the largest memory figure accepted: 1 PiB, in KiB.
const maxKiB = 1 << 40

// Meminfo is the part of /proc/meminfo banger shows, in KiB.
type Meminfo struct {
	TotalKiB     int64 // MemTotal
	FreeKiB      int64 // MemFree: pages the guest does not use at all
	AvailableKiB int64 // MemAvailable: free plus what the guest can reclaim
}

// UsedKiB is MemTotal - MemFree: everything the guest holds, its page
// cache included. It is the figure to compare with the VMM's RSS, since
// free page reporting hands back only free pages, never cached ones.
func (m Meminfo) UsedKiB() int64 { return m.TotalKiB - m.FreeKiB }

// ParseMeminfo parses /proc/meminfo text. It fails on text over
// MaxMeminfo bytes, a line over 512 bytes, a MemTotal, MemFree or
// MemAvailable line that is missing, repeated, not "N kB" or out of range
// (above 1 PiB, or free/available above the total). Other lines are
// skipped.
func ParseMeminfo(r io.Reader) (Meminfo, error) {
	var m Meminfo
	seen := map[string]bool{}
	err := scanBounded(r, MaxMeminfo, func(line string) error {
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			return nil
		}
		var dst *int64
		switch key {
		case "MemTotal":
			dst = &m.TotalKiB
		case "MemFree":
			dst = &m.FreeKiB
		case "MemAvailable":
			dst = &m.AvailableKiB
		default:
			return nil
		}
		if seen[key] {
			return fmt.Errorf("%s appears twice", key)
		}
		seen[key] = true
		n, err := parseKiB(val)
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		*dst = n
		return nil
	})
	if err != nil {
		return Meminfo{}, fmt.Errorf("parse meminfo: %w", err)
	}
	for _, k := range []string{"MemTotal", "MemFree", "MemAvailable"} {
		if !seen[k] {
			return Meminfo{}, fmt.Errorf("parse meminfo: no %s line", k)
		}
	}
	if m.TotalKiB == 0 || m.FreeKiB > m.TotalKiB || m.AvailableKiB > m.TotalKiB {
		return Meminfo{}, fmt.Errorf("parse meminfo: inconsistent figures (total %d kB, free %d kB, available %d kB)", m.TotalKiB, m.FreeKiB, m.AvailableKiB)
	}
	return m, nil
}

// ProcessRSS returns the resident set (VmRSS) of process pid, in KiB.
// Reading /proc/PID/status needs no privilege over the process, so it also
// works for a VMM that runs as another user.
func ProcessRSS(pid int) (int64, error) {
	if pid <= 0 {
		return 0, fmt.Errorf("rss of pid %d: not a process id", pid)
	}
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("rss of pid %d: %w", pid, err)
	}
	defer f.Close()
	n, err := parseStatusRSS(f)
	if err != nil {
		return 0, fmt.Errorf("rss of pid %d: %w", pid, err)
	}
	return n, nil
}

// parseStatusRSS finds the VmRSS line of /proc/PID/status text.
func parseStatusRSS(r io.Reader) (int64, error) {
	rss := int64(-1)
	err := scanBounded(r, maxStatus, func(line string) error {
		val, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			return nil
		}
		if rss >= 0 {
			return errors.New("VmRSS appears twice")
		}
		n, err := parseKiB(val)
		if err != nil {
			return fmt.Errorf("VmRSS: %w", err)
		}
		rss = n
		return nil
	})
	if err != nil {
		return 0, err
	}
	if rss < 0 {
		// Kernel threads and zombies have no VmRSS line.
		return 0, errors.New("no VmRSS line (a zombie or kernel thread?)")
	}
	return rss, nil
}

// scanBounded calls line for each line of at most limit bytes of r,
// failing on more input than that or a line over maxLine bytes.
func scanBounded(r io.Reader, limit int, line func(string) error) error {
	b, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return err
	}
	if len(b) > limit {
		return fmt.Errorf("more than %d bytes", limit)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, maxLine), maxLine)
	for sc.Scan() {
		if err := line(sc.Text()); err != nil {
			return err
		}
	}
	if errors.Is(sc.Err(), bufio.ErrTooLong) {
		return fmt.Errorf("a line is over %d bytes", maxLine)
	}
	return sc.Err()
}

// parseKiB parses "   123456 kB".
func parseKiB(s string) (int64, error) {
	f := strings.Fields(s)
	if len(f) != 2 || f[1] != "kB" {
		return 0, fmt.Errorf("%q is not \"N kB\"", strings.TrimSpace(s))
	}
	for _, c := range f[0] {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%q is not a number", f[0])
		}
	}
	n, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil || n > maxKiB {
		return 0, fmt.Errorf("%s kB is out of range", f[0])
	}
	return n, nil
}
