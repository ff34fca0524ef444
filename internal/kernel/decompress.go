package kernel

import (
	"bytes"
	"compress/bzip2"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz/lzma"
)

// compression names a compression format.
type compression string

const (
	compNone  compression = "none"
	compXZ    compression = "xz"
	compGzip  compression = "gzip"
	compZstd  compression = "zstd"
	compLZ4   compression = "lz4"
	compBzip2 compression = "bzip2"
	compLZMA  compression = "lzma"
	compLZO   compression = "lzo"
)

// magics lists the signatures the kernel's build writes at the start of a
// compressed payload (the same ones scripts/extract-vmlinux looks for).
var magics = []struct {
	c     compression
	magic []byte
}{
	{compXZ, xzMagic},
	{compGzip, []byte{0x1f, 0x8b, 0x08}},
	{compZstd, []byte{0x28, 0xb5, 0x2f, 0xfd}},
	{compLZ4, []byte{0x02, 0x21, 0x4c, 0x18}},
	{compBzip2, []byte("BZh")},
	{compLZMA, []byte{0x5d, 0x00, 0x00}}, // properties lc=3 lp=0 pb=2, then the dictionary size
	{compLZO, []byte{0x89, 'L', 'Z', 'O', 0x00, 0x0d, 0x0a, 0x1a, 0x0a}},
}

// sniff returns the compression whose magic starts data, or compNone.
func sniff(data []byte) compression {
	for _, m := range magics {
		if bytes.HasPrefix(data, m.magic) {
			return m.c
		}
	}
	return compNone
}

// newDecompressor returns a reader that decompresses r as c. The returned
// close function releases decoder resources; it does not close r.
func newDecompressor(c compression, r io.Reader) (io.Reader, func(), error) {
	nop := func() {}
	switch c {
	case compNone:
		return r, nop, nil
	case compXZ:
		zr, err := newXZReader(r)
		return zr, nop, err
	case compGzip:
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, nop, err
		}
		return zr, func() { zr.Close() }, nil
	case compZstd:
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, nop, err
		}
		return zr, zr.Close, nil
	case compBzip2:
		return bzip2.NewReader(r), nop, nil
	case compLZMA:
		zr, err := lzma.NewReader(r)
		return zr, nop, err
	}
	return nil, nop, fmt.Errorf("%s streams are not supported", c)
}

// decompressFirst decompresses the first compressed stream at the start of
// data as c, ignoring whatever follows it (a kernel appends the
// uncompressed size to its payload, and a payload found by scanning runs to
// the end of the image). sizeHint, if positive, presizes the output.
func decompressFirst(ctx context.Context, c compression, data []byte, sizeHint int) ([]byte, error) {
	out := bytes.NewBuffer(make([]byte, 0, max(sizeHint, 0)))
	switch c {
	case compXZ:
		n, err := xzStreamLen(data)
		if err != nil {
			return nil, err
		}
		r, err := newXZReader(bytes.NewReader(data[:n]))
		if err != nil {
			return nil, err
		}
		if _, err := io.Copy(out, ctxReader{ctx, r}); err != nil {
			return nil, err
		}
	case compLZMA:
		if len(data) < 13 || binary.LittleEndian.Uint32(data[1:5]) > 1<<30 {
			// The decoder allocates the declared dictionary up front.
			return nil, errors.New("lzma: implausible header")
		}
		// The lzma reader stops at its end marker or declared size.
		r, err := lzma.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, err
		}
		if _, err := io.Copy(out, ctxReader{ctx, r}); err != nil {
			return nil, err
		}
	case compGzip:
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, err
		}
		defer zr.Close()
		zr.Multistream(false)
		if _, err := io.Copy(out, ctxReader{ctx, zr}); err != nil {
			return nil, err
		}
	case compBzip2:
		_, err := io.Copy(out, ctxReader{ctx, bzip2.NewReader(bytes.NewReader(data))})
		var se bzip2.StructuralError
		if errors.As(err, &se) && string(se) == "bad magic value in continuation file" && out.Len() > 0 {
			err = nil // trailing data after a complete, checksummed stream
		}
		if err != nil {
			return nil, err
		}
	case compZstd:
		n, err := zstdFrameLen(data)
		if err != nil {
			return nil, err
		}
		zr, err := zstd.NewReader(bytes.NewReader(data[:n]), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		defer zr.Close()
		if _, err := io.Copy(out, ctxReader{ctx, zr}); err != nil {
			return nil, err
		}
	case compLZ4:
		return lz4Legacy(ctx, data, out.Bytes())
	case compLZO:
		return nil, errors.New("lzo compression is not supported")
	default:
		return nil, fmt.Errorf("unknown compression %q", c)
	}
	return out.Bytes(), nil
}

// lz4Legacy decodes the legacy lz4 format the kernel uses (`lz4 -l`): the
// magic 0x184C2102, then blocks each preceded by its little-endian
// compressed size, decompressing to at most 8 MiB each. A size that does
// not fit in the remaining data ends the stream (it is the kernel's
// appended length); the magic may repeat between blocks.
func lz4Legacy(ctx context.Context, data, out []byte) ([]byte, error) {
	const (
		magic    = 0x184c2102
		maxBlock = 8 << 20
	)
	if len(data) < 4 || binary.LittleEndian.Uint32(data) != magic {
		return nil, errors.New("lz4: bad legacy magic")
	}
	pos := 4
	blocks := 0
	var scratch []byte
	for len(data)-pos >= 4 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		size := binary.LittleEndian.Uint32(data[pos:])
		if size == magic {
			pos += 4
			continue
		}
		if size == 0 || uint64(size) > uint64(len(data)-pos-4) || size > uint32(lz4.CompressBlockBound(maxBlock)) {
			break
		}
		pos += 4
		if scratch == nil {
			scratch = make([]byte, maxBlock)
		}
		n, err := lz4.UncompressBlock(data[pos:pos+int(size)], scratch)
		if err != nil {
			return nil, fmt.Errorf("lz4: block %d: %w", blocks, err)
		}
		out = append(out, scratch[:n]...)
		pos += int(size)
		blocks++
	}
	if blocks == 0 {
		return nil, errors.New("lz4: no blocks")
	}
	return out, nil
}

// zstdFrameLen returns the length of the zstd frame (or skippable frames
// followed by one frame) at the start of data, by walking its block
// headers.
func zstdFrameLen(data []byte) (int, error) {
	pos := 0
	for {
		if len(data)-pos < 8 {
			return 0, errors.New("zstd: truncated frame")
		}
		m := binary.LittleEndian.Uint32(data[pos:])
		if m&0xfffffff0 == 0x184d2a50 { // skippable frame
			pos += 8 + int(binary.LittleEndian.Uint32(data[pos+4:]))
			continue
		}
		if m != 0xfd2fb528 {
			return 0, errors.New("zstd: bad magic")
		}
		break
	}
	pos += 4
	fhd := data[pos]
	pos++
	fcsFlag := fhd >> 6
	single := fhd&0x20 != 0
	hasChecksum := fhd&0x04 != 0
	if fhd&0x08 != 0 {
		return 0, errors.New("zstd: reserved frame header bit set")
	}
	if !single {
		pos++ // window descriptor
	}
	pos += [4]int{0, 1, 2, 4}[fhd&3] // dictionary ID
	fcsSize := [4]int{0, 2, 4, 8}[fcsFlag]
	if fcsFlag == 0 && single {
		fcsSize = 1
	}
	pos += fcsSize
	for {
		if len(data)-pos < 3 {
			return 0, errors.New("zstd: truncated block header")
		}
		bh := uint32(data[pos]) | uint32(data[pos+1])<<8 | uint32(data[pos+2])<<16
		pos += 3
		last := bh&1 != 0
		size := int(bh >> 3)
		switch (bh >> 1) & 3 {
		case 0, 2: // raw, compressed
			pos += size
		case 1: // RLE: one byte
			pos++
		default:
			return 0, errors.New("zstd: reserved block type")
		}
		if pos > len(data) {
			return 0, errors.New("zstd: truncated block")
		}
		if last {
			break
		}
	}
	if hasChecksum {
		pos += 4
	}
	if pos > len(data) {
		return 0, errors.New("zstd: truncated checksum")
	}
	return pos, nil
}

// ctxReader fails reads once its context is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
