package kernel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"

	"github.com/therootcompany/xz"
)

// xz streams are decoded by github.com/therootcompany/xz, a Go port of XZ
// Embedded (the decoder the kernel itself boots with). It verifies every
// check and index the format has and supports the x86 BCJ filter that the
// kernel's build applies (`xz --x86 --lzma2`), which
// github.com/ulikunitz/xz does not.

var xzMagic = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}

// xzDictMax caps the LZMA2 dictionary the decoder allocates. A stream's
// block header declares its dictionary size (up to 4 GiB) and the decoder
// allocates that much before decoding anything, so a hostile header would
// otherwise choose the allocation. 64 MiB is what `xz -9` uses; the
// kernel's build uses 32 MiB and dpkg-deb 8 MiB. A stream that needs more
// fails with xz.ErrMemlimit.
const xzDictMax = 64 << 20

// newXZReader returns a reader that decompresses the .xz data read from r:
// one or more streams, possibly with stream padding between them, and
// nothing else after them.
func newXZReader(r io.Reader) (io.Reader, error) {
	zr, err := xz.NewReader(r, xzDictMax)
	if err != nil {
		return nil, err
	}
	return zr, nil
}

// xzStreamLen returns the length of the xz stream at the start of data,
// which may be followed by anything: a kernel appends its uncompressed size
// right after the stream, and a payload found by scanning runs to the end
// of the image. The decoder cannot be told to stop at the end of a stream
// (it reads what follows as stream padding or another stream), so the end
// is found first, as the first stream footer whose magic, CRC32, stream
// flags (equal to the header's) and backward size fit; the decoder then
// verifies the whole stream, footer included, so a false match fails
// decoding instead of passing unchecked.
func xzStreamLen(data []byte) (int, error) {
	const (
		hdrLen      = 12
		footerLen   = 12
		minIndexLen = 8
	)
	if len(data) < hdrLen || !bytes.HasPrefix(data, xzMagic) {
		return 0, errors.New("xz: bad stream header")
	}
	flags := data[6:8]
	from := hdrLen + minIndexLen + footerLen - 2 // earliest footer magic
	for from < len(data) {
		i := bytes.Index(data[from:], []byte("YZ"))
		if i < 0 {
			break
		}
		end := from + i + 2
		f := data[end-footerLen : end]
		backward := (int64(binary.LittleEndian.Uint32(f[4:8])) + 1) * 4
		if bytes.Equal(f[8:10], flags) &&
			crc32.ChecksumIEEE(f[4:10]) == binary.LittleEndian.Uint32(f[:4]) &&
			backward <= int64(end-footerLen-hdrLen) {
			return end, nil
		}
		from += i + 1
	}
	return 0, errors.New("xz: data is truncated (no stream footer)")
}
