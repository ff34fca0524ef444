// Package gitpack writes git pack files of blobs stored without
// compression, and their version 2 index. A workspace's host side
// computes every checksum of such a pack (it hashes the files it sends at
// native speed); the guest only lays the same bytes out (Object), so the
// blobs of HEAD cross the wire once, as the work tree's files, instead of
// a second time inside .git.
package gitpack

import (
	"bytes"
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/adler32"
	"io"
	"sort"
	"strconv"
)

// maxStored is the largest deflate stored block.
const maxStored = 65535

// typeBlob is the pack object type of a blob.
const typeBlob = 3

// Header is the 12-byte header of a pack of n objects.
func Header(n uint32) []byte {
	b := []byte{'P', 'A', 'C', 'K', 0, 0, 0, 2, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[8:], n)
	return b
}

// BlobID is the git object id (SHA-1) of a blob with content r.
func BlobID(r io.Reader, size int64) ([20]byte, uint32, error) {
	h := sha1.New()
	a := adler32.New()
	h.Write([]byte("blob " + strconv.FormatInt(size, 10) + "\x00"))
	n, err := io.Copy(io.MultiWriter(h, a), r)
	if err == nil && n != size {
		err = fmt.Errorf("read %d bytes, want %d", n, size)
	}
	var id [20]byte
	copy(id[:], h.Sum(nil))
	return id, a.Sum32(), err
}

// objectHeader is the type-and-size header of a pack object.
func objectHeader(size int64) []byte {
	b := []byte{byte(typeBlob<<4) | byte(size&0x0f)}
	size >>= 4
	for size > 0 {
		b[len(b)-1] |= 0x80
		b = append(b, byte(size&0x7f))
		size >>= 7
	}
	return b
}

// Object writes to w the pack entry of a blob of size bytes read from r:
// its header, then a zlib stream of stored (uncompressed) deflate blocks
// ending with adler, which must be the Adler-32 of the content (the
// writer does not compute it: the host did). It returns the bytes
// written.
func Object(w io.Writer, r io.Reader, size int64, adler uint32, buf []byte) (int64, error) {
	if len(buf) < maxStored {
		buf = make([]byte, maxStored)
	}
	var written int64
	put := func(b []byte) error {
		n, err := w.Write(b)
		written += int64(n)
		return err
	}
	if err := put(append(objectHeader(size), 0x78, 0x01)); err != nil {
		return written, err
	}
	left := size
	for {
		n := min(left, maxStored)
		final := byte(0)
		if n == left {
			final = 1
		}
		hdr := []byte{final, byte(n), byte(n >> 8), ^byte(n), ^byte(n >> 8)}
		if err := put(hdr); err != nil {
			return written, err
		}
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			return written, fmt.Errorf("read blob content: %w", err)
		}
		if err := put(buf[:n]); err != nil {
			return written, err
		}
		left -= n
		if final == 1 {
			break
		}
	}
	var tail [4]byte
	binary.BigEndian.PutUint32(tail[:], adler)
	return written, put(tail[:])
}

// Entry is one object of a pack, for its index.
type Entry struct {
	ID     [20]byte
	CRC    uint32 // CRC-32 (IEEE) of the object's bytes in the pack
	Offset uint64
}

// ErrDuplicate is returned by Index for an id listed twice.
var ErrDuplicate = errors.New("object listed twice")

// Index returns the version 2 index of a pack holding entries, whose
// trailing checksum is packSum.
func Index(entries []Entry, packSum [20]byte) ([]byte, error) {
	es := append([]Entry(nil), entries...)
	sort.Slice(es, func(i, j int) bool { return bytes.Compare(es[i].ID[:], es[j].ID[:]) < 0 })
	for i := 1; i < len(es); i++ {
		if es[i].ID == es[i-1].ID {
			return nil, fmt.Errorf("%w: %x", ErrDuplicate, es[i].ID)
		}
	}
	var b bytes.Buffer
	b.Write([]byte{0xff, 't', 'O', 'c', 0, 0, 0, 2})
	var fan [256]uint32
	for _, e := range es {
		fan[e.ID[0]]++
	}
	var sum uint32
	for i := range fan {
		sum += fan[i]
		binary.Write(&b, binary.BigEndian, sum)
	}
	for _, e := range es {
		b.Write(e.ID[:])
	}
	for _, e := range es {
		binary.Write(&b, binary.BigEndian, e.CRC)
	}
	var large []uint64
	for _, e := range es {
		if e.Offset < 1<<31 {
			binary.Write(&b, binary.BigEndian, uint32(e.Offset))
			continue
		}
		binary.Write(&b, binary.BigEndian, uint32(1<<31|len(large)))
		large = append(large, e.Offset)
	}
	for _, o := range large {
		binary.Write(&b, binary.BigEndian, o)
	}
	b.Write(packSum[:])
	s := sha1.Sum(b.Bytes())
	b.Write(s[:])
	return b.Bytes(), nil
}

// PackSum is the pack checksum an index (from Index) records.
func PackSum(idx []byte) ([20]byte, error) {
	var s [20]byte
	if len(idx) < 8+256*4+40 || !bytes.Equal(idx[:8], []byte{0xff, 't', 'O', 'c', 0, 0, 0, 2}) {
		return s, errors.New("not a version 2 pack index")
	}
	copy(s[:], idx[len(idx)-40:len(idx)-20])
	return s, nil
}

// Names of the two control entries of a workspace tar stream that
// carries its blobs as work-tree files. Paths under .git are never files
// of a work tree (git refuses to track them), so they cannot collide.
const (
	// PlanEntry comes first: a JSON Plan.
	PlanEntry = ".git/banger-blobs.json"
	// IndexEntry comes after every file of the plan: the index (Index)
	// of the pack the guest lays out from those files.
	IndexEntry = ".git/banger-blobs.idx"
)

// Plan lists, in stream order, the regular files whose bytes are blobs
// of HEAD: the guest writes each one, as it extracts it, into a pack.
type Plan struct {
	Files []PlanFile `json:"files"`
}

// PlanFile is one file of a Plan.
type PlanFile struct {
	Path  string `json:"path"` // as named in the stream
	Adler uint32 `json:"adler32"`
}

// ObjectWriter writes the same pack entry as Object, from the content
// written to it: for a caller that is handed the bytes rather than
// reading them. Close ends the entry and checks that exactly size bytes
// came.
type ObjectWriter struct {
	w       io.Writer
	size    int64
	left    int64 // content bytes still to come
	inBlock int64 // left in the current stored block
	adler   uint32
	started bool
	blocks  int
}

// NewObjectWriter starts a blob entry of size bytes on w.
func NewObjectWriter(w io.Writer, size int64, adler uint32) *ObjectWriter {
	return &ObjectWriter{w: w, size: size, left: size, adler: adler}
}

func (o *ObjectWriter) start() error {
	if o.started {
		return nil
	}
	o.started = true
	_, err := o.w.Write(append(objectHeader(o.size), 0x78, 0x01))
	return err
}

func (o *ObjectWriter) block() error {
	n := min(o.left, maxStored)
	final := byte(0)
	if n == o.left {
		final = 1
	}
	o.inBlock = n
	o.blocks++
	_, err := o.w.Write([]byte{final, byte(n), byte(n >> 8), ^byte(n), ^byte(n >> 8)})
	return err
}

func (o *ObjectWriter) Write(p []byte) (int, error) {
	if err := o.start(); err != nil {
		return 0, err
	}
	done := 0
	for len(p) > 0 {
		if o.left == 0 {
			return done, fmt.Errorf("blob longer than its %d bytes", o.size)
		}
		if o.inBlock == 0 {
			if err := o.block(); err != nil {
				return done, err
			}
		}
		k := min(int64(len(p)), o.inBlock)
		if _, err := o.w.Write(p[:k]); err != nil {
			return done, err
		}
		o.inBlock -= k
		o.left -= k
		done += int(k)
		p = p[k:]
	}
	return done, nil
}

// Close ends the entry with the Adler-32 given at the start.
func (o *ObjectWriter) Close() error {
	if err := o.start(); err != nil {
		return err
	}
	if o.left != 0 {
		return fmt.Errorf("blob shorter than its %d bytes", o.size)
	}
	if o.blocks == 0 { // an empty blob: one empty final block
		if err := o.block(); err != nil {
			return err
		}
	}
	var tail [4]byte
	binary.BigEndian.PutUint32(tail[:], o.adler)
	_, err := o.w.Write(tail[:])
	return err
}
