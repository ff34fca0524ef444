package kernel

import (
	"bytes"
	"compress/bzip2"
	"context"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"
)

func TestXZReaderGoldenX86(t *testing.T) {
	golden, err := os.ReadFile("testdata/x86ish-120000-7.xz")
	if err != nil {
		t.Fatal(err)
	}
	want := x86ish(120000, 7)
	enc := bytes.Clone(want)
	newBCJX86(0, true).code(enc)
	if bytes.Equal(enc, want) {
		t.Fatal("test data has nothing for the x86 filter to convert")
	}
	r, err := newXZReader(bytes.NewReader(golden))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("decoded %d bytes, differ from the original %d", len(got), len(want))
	}
}

func TestXZReaderVariants(t *testing.T) {
	data := x86ish(50000, 3)
	other := []byte(strings.Repeat("second stream ", 100))
	cases := map[string]struct {
		in   []byte
		want []byte
	}{
		"crc32":  {xzCompress(t, data, xz.CRC32), data},
		"crc64":  {xzCompress(t, data, xz.CRC64), data},
		"sha256": {xzCompress(t, data, xz.SHA256), data},
		"none":   {xzCompress(t, data, xz.None), data},
		"x86":    {xzX86Compress(t, data), data},
		"empty":  {xzCompress(t, nil, xz.CRC64), nil},
		"concatenated with padding": {
			append(append(xzCompress(t, data, xz.CRC32), 0, 0, 0, 0), xzCompress(t, other, xz.CRC64)...),
			append(bytes.Clone(data), other...),
		},
		"trailing size": {append(xzX86Compress(t, data), 1, 2, 3, 4), data},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			r, err := newXZReader(bytes.NewReader(c.in))
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, c.want) {
				t.Fatalf("got %d bytes, want %d", len(got), len(c.want))
			}
		})
	}
}

func TestXZReaderCorrupt(t *testing.T) {
	good := xzX86Compress(t, x86ish(30000, 5))
	for _, off := range []int{8, 14, len(good) / 2, len(good) - 20, len(good) - 10, len(good) - 3} {
		bad := bytes.Clone(good)
		bad[off] ^= 0x40
		r, err := newXZReader(bytes.NewReader(bad))
		if err == nil {
			_, err = io.ReadAll(r)
		}
		if err == nil {
			t.Errorf("flipping byte %d of %d: no error", off, len(good))
		}
	}
	r, err := newXZReader(bytes.NewReader(good[:len(good)-30]))
	if err == nil {
		_, err = io.ReadAll(r)
	}
	if err == nil {
		t.Error("truncated stream: no error")
	}
}

func TestBCJX86RoundTrip(t *testing.T) {
	for seed := uint32(0); seed < 20; seed++ {
		data := x86ish(5000+int(seed)*37, seed)
		enc := bytes.Clone(data)
		newBCJX86(0x1000, true).code(enc)
		// Decode through the streaming reader with odd-sized reads.
		r := newBCJX86Reader(&chunkReader{data: enc, n: int(seed%7) + 1}, 0x1000)
		got, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("seed %d: round trip differs", seed)
		}
	}
}

// chunkReader hands out at most n bytes per Read.
type chunkReader struct {
	data []byte
	n    int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	k := copy(p[:min(len(p), c.n)], c.data)
	c.data = c.data[k:]
	return k, nil
}

func lzmaAloneCompress(t *testing.T, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	// Like `lzma -9` reading a pipe: unknown size, end-of-stream marker.
	w, err := lzma.WriterConfig{SizeInHeader: false, EOSMarker: true}.NewWriter(&b)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestExtractVmlinuxBzImage(t *testing.T) {
	elfData := fakeVmlinux()
	bz2, err := os.ReadFile("testdata/fake-vmlinux.bz2")
	if err != nil {
		t.Fatal(err)
	}
	bz2Want, err := io.ReadAll(bzip2.NewReader(bytes.NewReader(bz2)))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		payload []byte
		want    []byte
	}{
		{"xz-x86", xzX86Compress(t, elfData), elfData},
		{"xz", xzCompress(t, elfData, xz.CRC32), elfData},
		{"gzip", gzipCompress(t, elfData), elfData},
		{"zstd", zstdCompress(t, elfData), elfData},
		{"lz4-legacy", lz4LegacyCompress(t, elfData, 8<<20), elfData},
		{"lz4-legacy-multiblock", lz4LegacyCompress(t, elfData, 4096), elfData},
		{"bzip2", bz2, bz2Want},
		{"lzma", lzmaAloneCompress(t, elfData), elfData},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, version := range []uint16{0x020f, 0x0206} { // 0x0206: no payload fields, so scan
				img := fakeBzImage(c.payload, len(c.want), version)
				got, err := ExtractVmlinux(img)
				if err != nil {
					t.Fatalf("protocol %#x: %v", version, err)
				}
				if !bytes.Equal(got, c.want) {
					t.Fatalf("protocol %#x: got %d bytes, want %d", version, len(got), len(c.want))
				}
			}
			// A bare compressed ELF is accepted too.
			got, err := ExtractVmlinux(c.payload)
			if err != nil || !bytes.Equal(got, c.want) {
				t.Fatalf("bare payload: %d bytes, %v", len(got), err)
			}
		})
	}
}

func TestExtractVmlinuxBadPayloadOffsetFallsBackToScan(t *testing.T) {
	elfData := fakeVmlinux()
	img := fakeBzImage(xzX86Compress(t, elfData), len(elfData), 0x020f)
	binary.LittleEndian.PutUint32(img[payloadOffsetOff:], 0x10) // points at noise
	got, err := ExtractVmlinux(img)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, elfData) {
		t.Fatal("wrong result")
	}
}

func TestExtractVmlinuxELFPassthrough(t *testing.T) {
	elfData := fakeVmlinux()
	got, err := ExtractVmlinux(elfData)
	if err != nil {
		t.Fatal(err)
	}
	if &got[0] != &elfData[0] || len(got) != len(elfData) {
		t.Fatal("ELF input not returned as is")
	}
}

func TestExtractVmlinuxErrors(t *testing.T) {
	elfData := fakeVmlinux()
	corrupt := xzX86Compress(t, elfData)
	corrupt[len(corrupt)/2] ^= 0xff
	notELF := []byte(strings.Repeat("not an elf file ", 500))
	cases := map[string][]byte{
		"empty":             nil,
		"garbage":           []byte("this is not a kernel at all, just some text"),
		"truncated ELF":     elfData[:40],
		"corrupt payload":   fakeBzImage(corrupt, len(elfData), 0x020f),
		"payload not ELF":   fakeBzImage(gzipCompress(t, notELF), len(notELF), 0x020f),
		"no payload":        fakeBzImage([]byte("nothing compressed here"), 10, 0x020f),
		"truncated bz":      fakeBzImage(xzX86Compress(t, elfData), len(elfData), 0x020f)[:0x900],
		"bare corrupt gz":   gzipCompress(t, elfData)[:100],
		"lzo (unsupported)": append([]byte{0x89, 'L', 'Z', 'O', 0x00, 0x0d, 0x0a, 0x1a, 0x0a}, make([]byte, 64)...),
	}
	for name, img := range cases {
		t.Run(name, func(t *testing.T) {
			out, err := ExtractVmlinux(img)
			if err == nil {
				t.Fatalf("no error (got %d bytes)", len(out))
			}
		})
	}
}

// TestExtractVmlinuxNoPanic feeds random mutations of valid images: errors
// are fine, panics and hangs are not.
func TestExtractVmlinuxNoPanic(t *testing.T) {
	elfData := fakeVmlinux()
	bases := [][]byte{
		fakeBzImage(xzX86Compress(t, elfData), len(elfData), 0x020f),
		fakeBzImage(zstdCompress(t, elfData), len(elfData), 0x020f),
		fakeBzImage(lz4LegacyCompress(t, elfData, 4096), len(elfData), 0x020f),
		fakeBzImage(gzipCompress(t, elfData), len(elfData), 0x0206),
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 300; i++ {
		img := bytes.Clone(bases[i%len(bases)])
		for k := 0; k < 1+rng.IntN(8); k++ {
			img[rng.IntN(len(img))] = byte(rng.Uint32())
		}
		if rng.IntN(4) == 0 {
			img = img[:rng.IntN(len(img))]
		}
		ExtractVmlinux(img) //nolint:errcheck // only checking for panics
	}
}

func TestExtractVmlinuxCancel(t *testing.T) {
	elfData := fakeVmlinux()
	img := fakeBzImage(xzX86Compress(t, elfData), len(elfData), 0x020f)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := extractVmlinux(ctx, img); err == nil {
		t.Fatal("no error with a cancelled context")
	}
}

func TestZstdFrameLen(t *testing.T) {
	frame := zstdCompress(t, x86ish(100000, 9))
	n, err := zstdFrameLen(append(bytes.Clone(frame), 9, 9, 9, 9))
	if err != nil || n != len(frame) {
		t.Fatalf("got %d, %v; want %d", n, err, len(frame))
	}
	if _, err := zstdFrameLen(frame[:len(frame)-5]); err == nil {
		t.Fatal("truncated frame: no error")
	}
}

func TestLZMA2MatchesReferenceEncoder(t *testing.T) {
	big := append(x86ish(3<<20, 11), bytes.Repeat([]byte("abcabcabd"), 100000)...)
	inputs := map[string][]byte{
		"empty": nil,
		"one":   {42},
		"small": x86ish(1000, 2),
		"big":   big,
		"zeros": make([]byte, 5<<20),
	}
	props := []lzma.Properties{{LC: 3, LP: 0, PB: 2}, {LC: 0, LP: 4, PB: 4}, {LC: 4, LP: 0, PB: 0}, {LC: 1, LP: 2, PB: 1}}
	for name, data := range inputs {
		for _, dictCap := range []int{4096, 1 << 20} {
			for i, pr := range props {
				if len(data) > 1<<20 && i > 0 {
					break // the reference encoder is slow; one set of properties will do
				}
				var lz bytes.Buffer
				w, err := lzma.Writer2Config{Properties: &pr, DictCap: dictCap}.NewWriter2(&lz)
				if err != nil {
					t.Fatal(err)
				}
				w.Write(data)
				if err := w.Close(); err != nil {
					t.Fatal(err)
				}
				r, err := newLZMA2Reader(bytes.NewReader(lz.Bytes()), dictCap)
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(r)
				if err != nil {
					t.Fatalf("%s dict %d %+v: %v", name, dictCap, pr, err)
				}
				if !bytes.Equal(got, data) {
					t.Fatalf("%s dict %d %+v: output differs", name, dictCap, pr)
				}
			}
		}
	}
}

// TestLZMA2CorruptNoPanic mutates compressed LZMA2 data: decoding must fail
// or produce something, never panic or read out of bounds.
func TestLZMA2CorruptNoPanic(t *testing.T) {
	data := x86ish(100000, 4)
	var lz bytes.Buffer
	w, _ := lzma.Writer2Config{DictCap: 1 << 16}.NewWriter2(&lz)
	w.Write(data)
	w.Close()
	good := lz.Bytes()
	rng := rand.New(rand.NewPCG(3, 4))
	failures := 0
	for i := 0; i < 400; i++ {
		bad := bytes.Clone(good)
		for k := 0; k < 1+rng.IntN(4); k++ {
			bad[rng.IntN(len(bad))] = byte(rng.Uint32())
		}
		r, err := newLZMA2Reader(bytes.NewReader(bad), 1<<16)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadAll(r); err != nil {
			failures++
		}
	}
	if failures == 0 {
		t.Fatal("no corruption was detected at all")
	}
}
