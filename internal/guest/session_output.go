package guest

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// segmentPrefix starts the name of an output segment file; the rest of the
// name is the absolute output offset of its first byte, in 16 hex digits.
const segmentPrefix = "output."

// outputLog is the retained output of one session: the most recent bytes it
// wrote, kept on disk in at most two segment files. New output is appended
// to the last segment; once that holds segCap bytes a new segment is begun
// and the oldest is deleted, so between segCap and 2*segCap of the latest
// bytes are kept (once that much was written) and a write costs O(its
// length). Because a segment's name carries its offset, the total written
// can be recovered from the files alone after an agent restart.
//
// An outputLog is not safe for concurrent use: its session's mutex guards it.
type outputLog struct {
	dir    string
	segCap int64
	segs   []*segment // ascending offsets; at most two
	total  int64      // bytes ever written, including the ones dropped since
	broken bool       // the last write failed: begin a new segment next time
}

// segment is one output file: bytes [base, base+size) of the output.
type segment struct {
	base, size int64
	f          *os.File // open while the session runs; nil otherwise
}

// newOutputLog returns an empty log keeping at most capBytes bytes in dir.
func newOutputLog(dir string, capBytes int64) *outputLog {
	return &outputLog{dir: dir, segCap: max(capBytes/2, 1)}
}

// loadOutputLog returns the log an earlier agent left in dir, for reading.
func loadOutputLog(dir string, capBytes int64) *outputLog {
	l := newOutputLog(dir, capBytes)
	matches, _ := filepath.Glob(filepath.Join(dir, segmentPrefix+"*"))
	for _, p := range matches {
		base, err := strconv.ParseInt(strings.TrimPrefix(filepath.Base(p), segmentPrefix), 16, 64)
		if err != nil || base < 0 {
			continue
		}
		fi, err := os.Stat(p)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		l.segs = append(l.segs, &segment{base: base, size: fi.Size()})
	}
	sort.Slice(l.segs, func(i, j int) bool { return l.segs[i].base < l.segs[j].base })
	for len(l.segs) > 2 {
		l.dropFirst()
	}
	if n := len(l.segs); n > 0 {
		l.total = l.segs[n-1].base + l.segs[n-1].size
	}
	l.broken = true
	return l
}

func (l *outputLog) path(base int64) string {
	return filepath.Join(l.dir, fmt.Sprintf("%s%016x", segmentPrefix, base))
}

// first returns the offset of the oldest byte still retained.
func (l *outputLog) first() int64 {
	if len(l.segs) == 0 {
		return l.total
	}
	return l.segs[0].base
}

// write appends p. Every byte counts towards total even if it could not be
// stored; the error returned is the first one met.
func (l *outputLog) write(p []byte) error {
	for len(p) > 0 {
		var seg *segment
		if n := len(l.segs); n > 0 && !l.broken && l.segs[n-1].size < l.segCap {
			seg = l.segs[n-1]
		} else {
			var err error
			if seg, err = l.rotate(); err != nil {
				l.total += int64(len(p))
				return fmt.Errorf("start output segment: %w", err)
			}
		}
		n := min(int64(len(p)), l.segCap-seg.size)
		w, err := seg.f.Write(p[:n])
		seg.size += int64(w)
		if err != nil {
			// The rest of p is lost; later output goes to a new segment
			// that starts after the gap.
			l.broken = true
			l.total += int64(len(p))
			return fmt.Errorf("write output: %w", err)
		}
		l.total += n
		p = p[n:]
	}
	return nil
}

// rotate begins a new segment at the current total, deleting the oldest
// so that at most two remain.
func (l *outputLog) rotate() (*segment, error) {
	if n := len(l.segs); n > 0 && l.segs[n-1].size == 0 {
		// An empty segment (left by a failed write) holds nothing worth
		// keeping an older one out for.
		l.dropLast()
	}
	for len(l.segs) >= 2 {
		l.dropFirst()
	}
	f, err := os.OpenFile(l.path(l.total), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	seg := &segment{base: l.total, f: f}
	l.segs = append(l.segs, seg)
	l.broken = false
	return seg, nil
}

func (l *outputLog) dropFirst() {
	seg := l.segs[0]
	if seg.f != nil {
		seg.f.Close()
	}
	os.Remove(l.path(seg.base))
	l.segs = l.segs[1:]
}

func (l *outputLog) dropLast() {
	n := len(l.segs) - 1
	seg := l.segs[n]
	if seg.f != nil {
		seg.f.Close()
	}
	os.Remove(l.path(seg.base))
	l.segs = l.segs[:n]
}

// readAt copies retained output from offset off into p and returns the
// number of bytes copied and the offset that follows them. Output that is
// not retained (before first, or lost to a write error) is skipped, so it
// returns 0 only when off has reached total.
func (l *outputLog) readAt(p []byte, off int64) (int, int64) {
	if len(p) == 0 {
		return 0, off
	}
	for _, seg := range l.segs {
		end := seg.base + seg.size
		if off >= end {
			continue
		}
		off = max(off, seg.base)
		n, err := l.readSegment(seg, p[:min(int64(len(p)), end-off)], off-seg.base)
		if n > 0 {
			return n, off + int64(n)
		}
		if err != nil {
			// The file is shorter than recorded: skip what is missing.
			off = end
		}
	}
	return 0, l.total
}

func (l *outputLog) readSegment(seg *segment, p []byte, off int64) (int, error) {
	f := seg.f
	if f == nil {
		var err error
		if f, err = os.Open(l.path(seg.base)); err != nil {
			return 0, err
		}
		defer f.Close()
	}
	return f.ReadAt(p, off)
}

// close releases the open segment files; the log stays readable.
func (l *outputLog) close() {
	for _, seg := range l.segs {
		if seg.f != nil {
			seg.f.Close()
			seg.f = nil
		}
	}
	l.broken = true
}
