package catalog

import (
	"errors"
	"io"
	"os"
	"syscall"
)

// errNoMoreData is lseek's error when no data follows the offset.
const errNoMoreData = syscall.ENXIO

// holeReader reads the first size bytes of f, producing the zeros of the
// file's holes itself (found with SEEK_DATA and SEEK_HOLE) rather than
// reading them: on Linux, reading a hole of a sparse file makes the kernel
// fill page cache with zeros, which for a mostly empty 4 GiB disk image
// costs more than hashing and compressing it. Without hole support every
// byte is read.
type holeReader struct {
	f    *os.File
	off  int64
	size int64
	// [segStart, segEnd) is the current segment, data or hole.
	segStart, segEnd int64
	hole             bool
	noSeek           bool // the filesystem cannot report holes
}

func newHoleReader(f *os.File, size int64) *holeReader {
	return &holeReader{f: f, size: size, noSeek: !haveSeekHole}
}

func (r *holeReader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	if r.off < r.segStart || r.off >= r.segEnd {
		r.findSegment()
	}
	n := int(min(int64(len(p)), r.segEnd-r.off))
	if r.hole {
		clear(p[:n])
		r.off += int64(n)
		return n, nil
	}
	n, err := r.f.ReadAt(p[:n], r.off)
	r.off += int64(n)
	if err == io.EOF {
		if r.off < r.size {
			err = io.ErrUnexpectedEOF // the file shrank
		} else {
			err = nil
		}
	}
	return n, err
}

// findSegment sets the segment holding r.off.
func (r *holeReader) findSegment() {
	r.segStart, r.segEnd, r.hole = r.off, r.size, false
	if r.noSeek {
		return
	}
	data, err := r.f.Seek(r.off, seekData)
	switch {
	case err != nil && errors.Is(err, errNoMoreData):
		// Only a hole until the end of the file, or past the end of a
		// file shorter than size: that one is read, to fail.
		if st, err := r.f.Stat(); err == nil && st.Size() >= r.size {
			r.hole = true
		}
		return
	case err != nil:
		r.noSeek = true // unsupported here: read everything
		return
	case data > r.off:
		r.segEnd, r.hole = min(data, r.size), true
		return
	}
	hole, err := r.f.Seek(r.off, seekHole)
	if err != nil {
		r.noSeek = true
		return
	}
	if hole > r.off {
		r.segEnd = min(hole, r.size)
	}
}
