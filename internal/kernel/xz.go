package kernel

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"hash/crc64"
	"io"
)

// This file implements a reader for the .xz container format (LZMA2 is
// decoded in lzma2.go). It exists because the kernel compresses x86 images
// with `xz --x86 --lzma2`, and github.com/ulikunitz/xz supports neither the
// x86 BCJ filter nor, at its speed, decoding a kernel package quickly.

var xzMagic = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}

const (
	xzFilterDelta = 0x03
	xzFilterX86   = 0x04
	xzFilterLZMA2 = 0x21

	xzCheckNone   = 0x00
	xzCheckCRC32  = 0x01
	xzCheckCRC64  = 0x04
	xzCheckSHA256 = 0x0a
)

var crc64Table = crc64.MakeTable(crc64.ECMA)

// xzCheckSize returns the size of the check field for a check ID (xz file
// format specification, section 3.4).
func xzCheckSize(id byte) int {
	switch {
	case id == 0:
		return 0
	case id <= 3:
		return 4
	case id <= 6:
		return 8
	case id <= 9:
		return 16
	case id <= 12:
		return 32
	default:
		return 64
	}
}

func xzNewHash(id byte) hash.Hash {
	switch id {
	case xzCheckCRC32:
		return crc32.NewIEEE()
	case xzCheckCRC64:
		return crc64.New(crc64Table)
	case xzCheckSHA256:
		return sha256.New()
	}
	return nil // unknown check types are skipped, not verified
}

// countingReader wraps a bufio.Reader and counts the bytes read through it.
type countingReader struct {
	r *bufio.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *countingReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.n++
	}
	return b, err
}

type xzRecord struct {
	unpadded, uncompressed int64
}

// xzReader decodes a sequence of xz streams. Data after the last stream
// that is neither stream padding nor another stream is ignored, because a
// kernel appends the uncompressed size right after its compressed payload.
type xzReader struct {
	src *countingReader

	streamFlags [2]byte
	checkID     byte
	records     []xzRecord

	block     io.Reader // current block's decoded data; nil between blocks
	blockHdr  xzBlockHeader
	blockCR   *countingReader // compressed bytes of the current block
	blockHash hash.Hash
	blockN    int64

	err error
}

// newXZReader returns a reader that decompresses the xz data read from r.
func newXZReader(r io.Reader) (io.Reader, error) {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 1<<16)
	}
	z := &xzReader{src: &countingReader{r: br}}
	if err := z.readStreamHeader(); err != nil {
		return nil, err
	}
	return z, nil
}

func (z *xzReader) readStreamHeader() error {
	var h [12]byte
	if _, err := io.ReadFull(z.src, h[:]); err != nil {
		return fmt.Errorf("xz: read stream header: %w", noEOF(err))
	}
	if !bytes.Equal(h[:6], xzMagic) {
		return errors.New("xz: bad magic")
	}
	if crc32.ChecksumIEEE(h[6:8]) != binary.LittleEndian.Uint32(h[8:]) {
		return errors.New("xz: stream header checksum mismatch")
	}
	if h[6] != 0 || h[7]&0xf0 != 0 {
		return errors.New("xz: unsupported stream flags")
	}
	z.streamFlags = [2]byte{h[6], h[7]}
	z.checkID = h[7] & 0x0f
	z.records = z.records[:0]
	return nil
}

func (z *xzReader) Read(p []byte) (int, error) {
	if z.err != nil {
		return 0, z.err
	}
	for {
		if z.block == nil {
			if err := z.nextBlock(); err != nil {
				z.err = err
				return 0, err
			}
			continue
		}
		n, err := z.block.Read(p)
		z.blockN += int64(n)
		if z.blockHash != nil {
			z.blockHash.Write(p[:n])
		}
		if err == io.EOF {
			err = z.finishBlock()
			if err == nil && n == 0 {
				continue
			}
		}
		if err != nil {
			z.err = noEOF(err)
			return n, z.err
		}
		if n > 0 || len(p) == 0 {
			return n, nil
		}
	}
}

// nextBlock starts the next block, or handles the index, footer and what
// follows the stream when there is no next block. It returns io.EOF at the
// end of the last stream.
func (z *xzReader) nextBlock() error {
	first, err := z.src.ReadByte()
	if err != nil {
		return fmt.Errorf("xz: read block header: %w", noEOF(err))
	}
	if first == 0 {
		if err := z.readIndexAndFooter(); err != nil {
			return err
		}
		return z.nextStream()
	}
	hdr, err := readXZBlockHeader(z.src, first)
	if err != nil {
		return err
	}
	z.blockHdr = hdr
	z.blockCR = &countingReader{r: z.src.r}
	var r io.Reader
	lz, err := newLZMA2Reader(z.blockCR, hdr.dictCap)
	if err != nil {
		return fmt.Errorf("xz: %w", err)
	}
	r = lz
	for i := len(hdr.filters) - 1; i >= 0; i-- {
		f := hdr.filters[i]
		switch f.id {
		case xzFilterX86:
			r = newBCJX86Reader(r, f.start)
		case xzFilterDelta:
			r = newDeltaReader(r, f.dist)
		}
	}
	z.block = r
	z.blockHash = xzNewHash(z.checkID)
	z.blockN = 0
	return nil
}

// finishBlock reads the block padding and check after the block's data.
func (z *xzReader) finishBlock() error {
	h := z.blockHdr
	compressed := z.blockCR.n
	if h.compressedSize >= 0 && h.compressedSize != compressed {
		return errors.New("xz: block compressed size mismatch")
	}
	if h.uncompressedSize >= 0 && h.uncompressedSize != z.blockN {
		return errors.New("xz: block uncompressed size mismatch")
	}
	pad := (4 - (int64(h.size)+compressed)%4) % 4
	checkSize := xzCheckSize(z.checkID)
	buf := make([]byte, int(pad)+checkSize)
	if _, err := io.ReadFull(z.src, buf); err != nil {
		return fmt.Errorf("xz: read block check: %w", noEOF(err))
	}
	for _, b := range buf[:pad] {
		if b != 0 {
			return errors.New("xz: non-zero block padding")
		}
	}
	if z.blockHash != nil {
		sum := z.blockHash.Sum(nil)
		if z.checkID == xzCheckCRC32 || z.checkID == xzCheckCRC64 {
			// CRCs are stored little-endian; hash.Sum is big-endian.
			for i, j := 0, len(sum)-1; i < j; i, j = i+1, j-1 {
				sum[i], sum[j] = sum[j], sum[i]
			}
		}
		if !bytes.Equal(sum, buf[pad:]) {
			return errors.New("xz: block checksum mismatch")
		}
	}
	z.records = append(z.records, xzRecord{
		unpadded:     int64(h.size) + compressed + int64(checkSize),
		uncompressed: z.blockN,
	})
	z.block = nil
	return nil
}

// readIndexAndFooter reads the index (its indicator byte already consumed)
// and the stream footer, and checks them against the decoded blocks.
func (z *xzReader) readIndexAndFooter() error {
	crc := crc32.NewIEEE()
	crc.Write([]byte{0})
	size := int64(1)
	tee := &teeByteReader{r: z.src, h: crc, n: &size}
	count, err := readUvarint(tee)
	if err != nil {
		return fmt.Errorf("xz: read index: %w", err)
	}
	if count != uint64(len(z.records)) {
		return errors.New("xz: index record count mismatch")
	}
	for _, rec := range z.records {
		unpadded, err := readUvarint(tee)
		if err != nil {
			return fmt.Errorf("xz: read index: %w", err)
		}
		uncompressed, err := readUvarint(tee)
		if err != nil {
			return fmt.Errorf("xz: read index: %w", err)
		}
		if int64(unpadded) != rec.unpadded || int64(uncompressed) != rec.uncompressed {
			return errors.New("xz: index does not match blocks")
		}
	}
	for size%4 != 0 {
		b, err := tee.ReadByte()
		if err != nil {
			return fmt.Errorf("xz: read index: %w", err)
		}
		if b != 0 {
			return errors.New("xz: non-zero index padding")
		}
	}
	want := crc.Sum32()
	var tail [16]byte // index CRC32, then the 12-byte stream footer
	if _, err := io.ReadFull(z.src, tail[:]); err != nil {
		return fmt.Errorf("xz: read stream footer: %w", noEOF(err))
	}
	if binary.LittleEndian.Uint32(tail[:4]) != want {
		return errors.New("xz: index checksum mismatch")
	}
	footer := tail[4:]
	if string(footer[10:12]) != "YZ" {
		return errors.New("xz: bad stream footer magic")
	}
	if crc32.ChecksumIEEE(footer[4:10]) != binary.LittleEndian.Uint32(footer[:4]) {
		return errors.New("xz: stream footer checksum mismatch")
	}
	if footer[8] != z.streamFlags[0] || footer[9] != z.streamFlags[1] {
		return errors.New("xz: stream footer flags differ from header")
	}
	if backward := (int64(binary.LittleEndian.Uint32(footer[4:8])) + 1) * 4; backward != size+4 {
		return errors.New("xz: stream footer backward size mismatch")
	}
	return nil
}

// nextStream skips stream padding and starts a concatenated stream if one
// follows. Anything else ends the data.
func (z *xzReader) nextStream() error {
	br := z.src.r
	for {
		p, _ := br.Peek(len(xzMagic))
		if len(p) >= 4 && bytes.Equal(p[:4], []byte{0, 0, 0, 0}) {
			if _, err := br.Discard(4); err != nil {
				return err
			}
			continue
		}
		if bytes.Equal(p, xzMagic) {
			return z.readStreamHeader()
		}
		return io.EOF
	}
}

type xzFilter struct {
	id    uint64
	start uint32 // BCJ start offset
	dist  int    // delta distance
}

type xzBlockHeader struct {
	size             int
	compressedSize   int64 // -1 if absent
	uncompressedSize int64 // -1 if absent
	filters          []xzFilter
	dictCap          int
}

func readXZBlockHeader(r io.Reader, first byte) (xzBlockHeader, error) {
	h := xzBlockHeader{size: (int(first) + 1) * 4, compressedSize: -1, uncompressedSize: -1}
	buf := make([]byte, h.size)
	buf[0] = first
	if _, err := io.ReadFull(r, buf[1:]); err != nil {
		return h, fmt.Errorf("xz: read block header: %w", noEOF(err))
	}
	body := buf[:h.size-4]
	if crc32.ChecksumIEEE(body) != binary.LittleEndian.Uint32(buf[h.size-4:]) {
		return h, errors.New("xz: block header checksum mismatch")
	}
	br := bytes.NewReader(body[2:])
	flags := body[1]
	if flags&0x3c != 0 {
		return h, errors.New("xz: unsupported block flags")
	}
	if flags&0x40 != 0 {
		v, err := readUvarint(br)
		if err != nil || v == 0 || v > 1<<62 {
			return h, errors.New("xz: bad block compressed size")
		}
		h.compressedSize = int64(v)
	}
	if flags&0x80 != 0 {
		v, err := readUvarint(br)
		if err != nil || v > 1<<62 {
			return h, errors.New("xz: bad block uncompressed size")
		}
		h.uncompressedSize = int64(v)
	}
	nfilters := int(flags&3) + 1
	for i := 0; i < nfilters; i++ {
		id, err := readUvarint(br)
		if err != nil {
			return h, errors.New("xz: bad filter flags")
		}
		psize, err := readUvarint(br)
		if err != nil || psize > uint64(br.Len()) {
			return h, errors.New("xz: bad filter properties")
		}
		props := make([]byte, psize)
		br.Read(props)
		last := i == nfilters-1
		f := xzFilter{id: id}
		switch {
		case id == xzFilterLZMA2 && last:
			if len(props) != 1 || props[0] > 40 {
				return h, errors.New("xz: bad lzma2 properties")
			}
			h.dictCap = xzDictCap(props[0])
		case id == xzFilterX86 && !last:
			switch len(props) {
			case 0:
			case 4:
				f.start = binary.LittleEndian.Uint32(props)
			default:
				return h, errors.New("xz: bad x86 filter properties")
			}
		case id == xzFilterDelta && !last:
			if len(props) != 1 {
				return h, errors.New("xz: bad delta filter properties")
			}
			f.dist = int(props[0]) + 1
		case last:
			return h, errors.New("xz: last filter is not lzma2")
		default:
			return h, fmt.Errorf("xz: unsupported filter %#x", id)
		}
		h.filters = append(h.filters, f)
	}
	for br.Len() > 0 {
		if b, _ := br.ReadByte(); b != 0 {
			return h, errors.New("xz: non-zero block header padding")
		}
	}
	return h, nil
}

// xzDictCap turns an LZMA2 dictionary size byte into a size in bytes.
func xzDictCap(p byte) int {
	if p >= 40 {
		return 0xffffffff
	}
	return int(uint64(2|(p&1)) << (p/2 + 11))
}

// teeByteReader reads bytes, feeding them to a hash and counting them.
type teeByteReader struct {
	r io.ByteReader
	h hash.Hash
	n *int64
}

func (t *teeByteReader) ReadByte() (byte, error) {
	b, err := t.r.ReadByte()
	if err != nil {
		return 0, noEOF(err)
	}
	t.h.Write([]byte{b})
	*t.n++
	return b, nil
}

// readUvarint reads an xz multibyte integer (at most 9 bytes, no trailing
// zero byte).
func readUvarint(r io.ByteReader) (uint64, error) {
	var v uint64
	for i := 0; i < 9; i++ {
		b, err := r.ReadByte()
		if err != nil {
			return 0, noEOF(err)
		}
		v |= uint64(b&0x7f) << (7 * i)
		if b&0x80 == 0 {
			if b == 0 && i > 0 {
				return 0, errors.New("xz: non-minimal integer")
			}
			return v, nil
		}
	}
	return 0, errors.New("xz: integer too long")
}

// noEOF turns io.EOF into io.ErrUnexpectedEOF: inside a structure, running
// out of input is always an error.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// bcjX86 is the state of the x86 branch/call/jump filter (the BCJ filter of
// the xz format): it converts the absolute addresses stored by the encoder
// in E8/E9 (call/jmp rel32) instructions back to relative ones, or the
// reverse when encoding.
type bcjX86 struct {
	pos      uint32 // stream position of the next unfiltered byte
	prevMask uint32
	prevPos  uint32
	encoder  bool
}

func newBCJX86(start uint32, encoder bool) *bcjX86 {
	return &bcjX86{pos: start, prevPos: start - 5, encoder: encoder}
}

func bcjMSByte(b byte) bool { return b == 0 || b == 0xff }

// code filters buf in place and returns how many bytes were converted; the
// rest (at most 4 bytes) must be passed again with more data following, or
// left unchanged at the end of the stream.
func (s *bcjX86) code(buf []byte) int {
	maskToBitNumber := [5]uint32{0, 1, 2, 2, 3}
	if len(buf) < 5 {
		return 0
	}
	prevMask, prevPos := s.prevMask, s.prevPos
	if s.pos-prevPos > 5 {
		prevPos = s.pos - 5
	}
	limit := len(buf) - 5
	i := 0
	for i <= limit {
		b := buf[i]
		if b != 0xe8 && b != 0xe9 {
			i++
			continue
		}
		cur := s.pos + uint32(i)
		offset := cur - prevPos
		prevPos = cur
		if offset > 5 {
			prevMask = 0
		} else {
			for k := uint32(0); k < offset; k++ {
				prevMask &= 0x77
				prevMask <<= 1
			}
		}
		b = buf[i+4]
		if bcjMSByte(b) && prevMask>>1 <= 4 && prevMask>>1 != 3 {
			src := binary.LittleEndian.Uint32(buf[i+1:])
			var dest uint32
			for {
				if s.encoder {
					dest = src + (cur + 5)
				} else {
					dest = src - (cur + 5)
				}
				if prevMask == 0 {
					break
				}
				n := maskToBitNumber[prevMask>>1]
				b = byte(dest >> (24 - n*8))
				if !bcjMSByte(b) {
					break
				}
				src = dest ^ (1<<(32-n*8) - 1)
			}
			dest &= 0x01ffffff
			if dest&0x01000000 != 0 {
				dest |= 0xff000000
			}
			binary.LittleEndian.PutUint32(buf[i+1:], dest)
			i += 5
			prevMask = 0
		} else {
			i++
			prevMask |= 1
			if bcjMSByte(b) {
				prevMask |= 0x10
			}
		}
	}
	s.prevMask, s.prevPos = prevMask, prevPos
	s.pos += uint32(i)
	return i
}

// bcjReader applies a bcjX86 decoder to a stream.
type bcjReader struct {
	r      io.Reader
	f      *bcjX86
	buf    []byte
	start  int // next byte to hand out
	conv   int // end of the converted bytes
	end    int // end of the valid bytes
	eof    bool
	srcErr error
}

func newBCJX86Reader(r io.Reader, start uint32) io.Reader {
	return &bcjReader{r: r, f: newBCJX86(start, false), buf: make([]byte, 1<<16)}
}

func (b *bcjReader) Read(p []byte) (int, error) {
	for b.start == b.conv {
		if b.eof {
			if b.conv < b.end {
				// The tail that was too short to convert passes unchanged.
				b.conv = b.end
				break
			}
			return 0, b.srcErr
		}
		// Keep the unconverted tail, refill behind it.
		n := copy(b.buf, b.buf[b.conv:b.end])
		b.start, b.conv, b.end = 0, 0, n
		for b.end < len(b.buf) && !b.eof {
			m, err := b.r.Read(b.buf[b.end:])
			b.end += m
			if err != nil {
				b.eof = true
				b.srcErr = err
			}
			if m == 0 && err == nil {
				break
			}
		}
		b.conv = b.f.code(b.buf[:b.end])
	}
	n := copy(p, b.buf[b.start:b.conv])
	b.start += n
	return n, nil
}

// deltaReader undoes the xz delta filter.
type deltaReader struct {
	r    io.Reader
	dist int
	hist [256]byte
	pos  byte
}

func newDeltaReader(r io.Reader, dist int) io.Reader {
	return &deltaReader{r: r, dist: dist}
}

func (d *deltaReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	for i := 0; i < n; i++ {
		p[i] += d.hist[byte(d.dist+int(d.pos))]
		d.hist[d.pos] = p[i]
		d.pos--
	}
	return n, err
}
