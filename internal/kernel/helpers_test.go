package kernel

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"
)

type elfSection struct {
	name string
	data []byte
}

// makeELF builds a minimal little-endian ELF64 x86-64 file of the given
// type (elf.ET_EXEC = 2, elf.ET_REL = 1) with the given sections.
func makeELF(typ uint16, sections ...elfSection) []byte {
	var shstr bytes.Buffer
	shstr.WriteByte(0)
	nameOff := make([]int, len(sections)+1)
	for i, s := range sections {
		nameOff[i] = shstr.Len()
		shstr.WriteString(s.name)
		shstr.WriteByte(0)
	}
	nameOff[len(sections)] = shstr.Len()
	shstr.WriteString(".shstrtab\x00")

	var body bytes.Buffer
	body.Write(make([]byte, 64)) // ELF header, filled below
	offs := make([]int, len(sections))
	for i, s := range sections {
		offs[i] = body.Len()
		body.Write(s.data)
	}
	shstrOff := body.Len()
	body.Write(shstr.Bytes())
	for body.Len()%8 != 0 {
		body.WriteByte(0)
	}
	shoff := body.Len()
	le := binary.LittleEndian
	sh := make([]byte, 64)
	body.Write(sh) // null section
	for i, s := range sections {
		clear(sh)
		le.PutUint32(sh[0:], uint32(nameOff[i]))
		le.PutUint32(sh[4:], 1) // SHT_PROGBITS
		le.PutUint64(sh[24:], uint64(offs[i]))
		le.PutUint64(sh[32:], uint64(len(s.data)))
		le.PutUint64(sh[48:], 1)
		body.Write(sh)
	}
	clear(sh)
	le.PutUint32(sh[0:], uint32(nameOff[len(sections)]))
	le.PutUint32(sh[4:], 3) // SHT_STRTAB
	le.PutUint64(sh[24:], uint64(shstrOff))
	le.PutUint64(sh[32:], uint64(shstr.Len()))
	le.PutUint64(sh[48:], 1)
	body.Write(sh)

	out := body.Bytes()
	copy(out, []byte{0x7f, 'E', 'L', 'F', 2, 1, 1})
	le.PutUint16(out[16:], typ)
	le.PutUint16(out[18:], 62) // EM_X86_64
	le.PutUint32(out[20:], 1)
	le.PutUint64(out[40:], uint64(shoff))
	le.PutUint16(out[52:], 64)
	le.PutUint16(out[58:], 64)
	le.PutUint16(out[60:], uint16(len(sections)+2))
	le.PutUint16(out[62:], uint16(len(sections)+1))
	return out
}

// fakeVmlinux is a small ELF executable with x86-looking text, so the BCJ
// filter has calls to convert.
func fakeVmlinux() []byte {
	return makeELF(2, elfSection{".text", x86ish(20000, 1)})
}

// fakeKo is a relocatable ELF with a .modinfo section.
func fakeKo(name string, depends string) []byte {
	info := fmt.Sprintf("license=GPL\x00depends=%s\x00name=%s\x00vermagic=1.2.3 SMP\x00", depends, name)
	return makeELF(1, elfSection{".text", []byte{0xc3}}, elfSection{".modinfo", []byte(info)})
}

// x86ish returns deterministic bytes that look a little like x86 code:
// many E8/E9 rel32 instructions with small displacements, some padding.
func x86ish(n int, seed uint32) []byte {
	out := make([]byte, 0, n+8)
	x := seed*2654435761 + 1
	next := func() uint32 {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		return x
	}
	for len(out) < n {
		switch r := next() % 8; {
		case r < 3:
			d := int32(next()%65536) - 32768
			out = append(out, byte(0xe8+r%2))
			out = binary.LittleEndian.AppendUint32(out, uint32(d))
		case r < 5:
			out = append(out, 0x48, 0x89, 0xe5, 0x90, 0x90, 0xcc)
		case r < 6:
			out = append(out, 0x00, 0x00, 0xff, 0xff)
		default:
			out = append(out, byte(next()), byte(next()))
		}
	}
	return out[:n]
}

func xzCompress(t testing.TB, data []byte, check byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := xz.WriterConfig{CheckSum: check}.NewWriter(&b)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// xzX86Compress builds an xz stream with the x86 BCJ filter followed by
// LZMA2, as the kernel's build does, and a CRC32 check.
func xzX86Compress(t testing.TB, data []byte) []byte {
	t.Helper()
	return xzX86CompressDict(t, data, 8)
}

// xzX86CompressDict is xzX86Compress with the LZMA2 dictionary size byte
// of the block header set to dictProp (8 = 64 KiB, the size the data is
// compressed with; 40 = 4 GiB). A decoder allocates what the header says.
func xzX86CompressDict(t testing.TB, data []byte, dictProp byte) []byte {
	t.Helper()
	filtered := bcjX86Encode(data)
	var lz bytes.Buffer
	w, err := lzma.Writer2Config{DictCap: 1 << 16}.NewWriter2(&lz)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(filtered)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	var out bytes.Buffer
	flags := []byte{0, 0x01} // CRC32 check
	out.Write(xzMagic)
	out.Write(flags)
	out.Write(le.AppendUint32(nil, crc32.ChecksumIEEE(flags)))
	// Block header: size byte, flags (2 filters), x86 (no props),
	// LZMA2 (1 prop byte: the dictionary size), padding, CRC32.
	bh := []byte{0, 0x01, 0x04, 0x00, 0x21, 0x01, dictProp}
	for (len(bh)+4)%4 != 0 {
		bh = append(bh, 0)
	}
	bh[0] = byte((len(bh)+4)/4 - 1)
	bh = le.AppendUint32(bh, crc32.ChecksumIEEE(bh))
	out.Write(bh)
	out.Write(lz.Bytes())
	pad := (4 - (len(bh)+lz.Len())%4) % 4
	out.Write(make([]byte, pad))
	out.Write(le.AppendUint32(nil, crc32.ChecksumIEEE(data)))
	// Index.
	idx := []byte{0, 1}
	idx = appendXZVarint(idx, uint64(len(bh)+lz.Len()+4))
	idx = appendXZVarint(idx, uint64(len(data)))
	for len(idx)%4 != 0 {
		idx = append(idx, 0)
	}
	idx = le.AppendUint32(idx, crc32.ChecksumIEEE(idx))
	out.Write(idx)
	// Footer.
	ft := le.AppendUint32(nil, uint32(len(idx)/4-1))
	ft = append(ft, flags...)
	out.Write(le.AppendUint32(nil, crc32.ChecksumIEEE(ft)))
	out.Write(ft)
	out.WriteString("YZ")
	return out.Bytes()
}

// bcjX86Encode returns data run through the encoding side of the xz x86
// BCJ filter (start offset 0), as `xz --x86` does before LZMA2: the
// relative targets of E8/E9 (call/jmp rel32) instructions become absolute.
// It follows XZ Embedded's filter; the golden file made by xz(1) checks that
// the decoder undoes the real thing, and this makes streams of any content.
func bcjX86Encode(data []byte) []byte {
	buf := bytes.Clone(data)
	maskToBitNumber := [5]uint32{0, 1, 2, 2, 3}
	msByte := func(b byte) bool { return b == 0 || b == 0xff }
	var prevMask uint32
	prevPos := ^uint32(4) // 0 - 5
	for i := 0; i+5 <= len(buf); {
		b := buf[i]
		if b != 0xe8 && b != 0xe9 {
			i++
			continue
		}
		cur := uint32(i)
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
		if !msByte(b) || prevMask>>1 > 4 || prevMask>>1 == 3 {
			i++
			prevMask |= 1
			if msByte(b) {
				prevMask |= 0x10
			}
			continue
		}
		src := binary.LittleEndian.Uint32(buf[i+1:])
		var dest uint32
		for {
			dest = src + (cur + 5)
			if prevMask == 0 {
				break
			}
			n := maskToBitNumber[prevMask>>1]
			if !msByte(byte(dest >> (24 - n*8))) {
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
	}
	return buf
}

func appendXZVarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

func gzipCompress(t testing.TB, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Write(data)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func zstdCompress(t testing.TB, data []byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderCRC(true))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(data, nil)
}

// lz4LegacyCompress writes the legacy lz4 format (`lz4 -l`): magic, then
// blocks of at most 8 MiB input, each prefixed by its compressed size.
func lz4LegacyCompress(t testing.TB, data []byte, blockSize int) []byte {
	t.Helper()
	out := binary.LittleEndian.AppendUint32(nil, 0x184c2102)
	for len(data) > 0 {
		n := min(blockSize, len(data))
		dst := make([]byte, lz4.CompressBlockBound(n))
		m, err := lz4.CompressBlock(data[:n], dst, nil)
		if err != nil || m == 0 {
			t.Fatalf("lz4 compress: %d, %v", m, err)
		}
		out = binary.LittleEndian.AppendUint32(out, uint32(m))
		out = append(out, dst[:m]...)
		data = data[n:]
	}
	return out
}

// fakeBzImage wraps a compressed payload in a minimal bzImage: a setup
// header with "HdrS", boot protocol version, setup_sects, payload_offset and
// payload_length; the payload is followed by the uncompressed size, as the
// kernel's build appends it, and some trailing bytes.
func fakeBzImage(payload []byte, uncompressedSize int, version uint16) []byte {
	const setupSects = 3
	const payloadOffset = 0x3a0
	img := make([]byte, (setupSects+1)*512+payloadOffset)
	for i := range img {
		img[i] = byte(i * 7) // not zeros: the scanner must cope with noise
	}
	img[0], img[1] = 'M', 'Z'
	img[setupSectsOff] = setupSects
	copy(img[headerMagicOff:], "HdrS")
	le := binary.LittleEndian
	le.PutUint16(img[versionOff:], version)
	full := append(bytes.Clone(payload), le.AppendUint32(nil, uint32(uncompressedSize))...)
	le.PutUint32(img[payloadOffsetOff:], payloadOffset)
	le.PutUint32(img[payloadLengthOff:], uint32(len(full)))
	// Clear accidental magics in the noise before the payload.
	for _, m := range magics {
		for {
			i := bytes.Index(img[0x260:], m.magic)
			if i < 0 {
				break
			}
			img[0x260+i] ^= 0x55
		}
	}
	img = append(img, full...)
	return append(img, []byte("trailing stuff, like a signature")...)
}

// tarEntry is one entry for makeTar.
type tarEntry struct {
	name     string
	typ      byte
	mode     int64
	body     string
	linkname string
}

func makeTar(t testing.TB, entries []tarEntry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := &tar.Header{
			Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.linkname,
			Size: int64(len(e.body)), ModTime: time.Unix(1700000000, 0), Uname: "root", Gname: "root",
		}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			io.WriteString(tw, e.body)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// makeAr builds an ar archive as dpkg-deb writes it.
func makeAr(members ...[2][]byte) []byte {
	var b bytes.Buffer
	b.WriteString("!<arch>\n")
	for _, m := range members {
		fmt.Fprintf(&b, "%-16s%-12d%-6d%-6d%-8s%-10d`\n", m[0], 1700000000, 0, 0, "100644", len(m[1]))
		b.Write(m[1])
		if len(m[1])%2 == 1 {
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

// writeDeb writes a .deb with the given data tar, compressed per the
// member name's suffix, and returns its path.
func writeDeb(t testing.TB, dir, dataMember string, dataTar []byte) string {
	t.Helper()
	var data []byte
	switch filepath.Ext(dataMember) {
	case ".xz":
		data = xzCompress(t, dataTar, xz.CRC64)
	case ".zst":
		data = zstdCompress(t, dataTar)
	case ".gz":
		data = gzipCompress(t, dataTar)
	case ".tar":
		data = dataTar
	default:
		t.Fatalf("unknown member %s", dataMember)
	}
	control := xzCompress(t, makeTar(t, []tarEntry{
		{name: "./", typ: tar.TypeDir, mode: 0o755},
		{name: "./control", typ: tar.TypeReg, mode: 0o644, body: "Package: linux-image-test\nVersion: 1.2.3\n"},
	}), xz.CRC32)
	deb := makeAr(
		[2][]byte{[]byte("debian-binary"), []byte("2.0\n")},
		[2][]byte{[]byte("control.tar.xz"), control},
		[2][]byte{[]byte(dataMember), data},
	)
	p := filepath.Join(dir, "test.deb")
	if err := os.WriteFile(p, deb, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
