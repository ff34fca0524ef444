package kernel

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	tcxz "github.com/therootcompany/xz"
	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"

	"banger/internal/testreq"
)

func TestXZReaderGoldenX86(t *testing.T) {
	golden, err := os.ReadFile("testdata/x86ish-120000-7.xz")
	if err != nil {
		t.Fatal(err)
	}
	want := x86ish(120000, 7)
	if bytes.Equal(bcjX86Encode(want), want) {
		t.Fatal("test data has nothing for the x86 filter to convert")
	}
	got := readXZ(t, golden)
	if !bytes.Equal(got, want) {
		t.Fatalf("decoded %d bytes, differ from the original %d", len(got), len(want))
	}
}

// readXZ decodes a whole .xz file through newXZReader.
func readXZ(t *testing.T, in []byte) []byte {
	t.Helper()
	r, err := newXZReader(bytes.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return got
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
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if got := readXZ(t, c.in); !bytes.Equal(got, c.want) {
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
	for _, n := range []int{0, 5, 11, 12, 40, len(good) / 2, len(good) - 30, len(good) - 1} {
		r, err := newXZReader(bytes.NewReader(good[:n]))
		if err == nil {
			_, err = io.ReadAll(r)
		}
		if err == nil {
			t.Errorf("stream truncated to %d of %d bytes: no error", n, len(good))
		} else if !strings.HasPrefix(err.Error(), "xz: ") && err != io.ErrUnexpectedEOF {
			t.Errorf("stream truncated to %d bytes: unclear error %q", n, err)
		}
	}
	// Trailing data that is neither padding nor a stream is an error for
	// a whole file (decompressFirst is the way to ignore it).
	r, err := newXZReader(bytes.NewReader(append(bytes.Clone(good), 1, 2, 3, 4)))
	if err == nil {
		_, err = io.ReadAll(r)
	}
	if err == nil {
		t.Error("trailing garbage after a whole file: no error")
	}
}

// TestXZReaderSmallReads decodes x86-filtered streams fed a few bytes at a
// time and read into odd-sized buffers, so the BCJ filter's carried-over
// tail is exercised at every boundary.
func TestXZReaderSmallReads(t *testing.T) {
	for seed := uint32(0); seed < 20; seed++ {
		data := x86ish(5000+int(seed)*37, seed)
		in := xzX86Compress(t, data)
		r, err := newXZReader(&chunkReader{data: in, n: int(seed%7) + 1})
		if err != nil {
			t.Fatal(err)
		}
		var got []byte
		buf := make([]byte, int(seed%5)+1)
		for {
			n, err := r.Read(buf)
			got = append(got, buf[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("seed %d: output differs", seed)
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

// TestXZMatchesReferenceEncoder decodes what an independent encoder
// (github.com/ulikunitz/xz) makes with various LZMA properties and
// dictionary sizes.
func TestXZMatchesReferenceEncoder(t *testing.T) {
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
				var b bytes.Buffer
				w, err := xz.WriterConfig{Properties: &pr, DictCap: dictCap, CheckSum: xz.CRC32}.NewWriter(&b)
				if err != nil {
					t.Fatal(err)
				}
				w.Write(data)
				if err := w.Close(); err != nil {
					t.Fatal(err)
				}
				if got := readXZ(t, b.Bytes()); !bytes.Equal(got, data) {
					t.Fatalf("%s dict %d %+v: output differs", name, dictCap, pr)
				}
			}
		}
	}
}

// TestXZCorruptNoPanic mutates compressed data: decoding must fail or
// produce something, never panic or read out of bounds.
func TestXZCorruptNoPanic(t *testing.T) {
	good := xzX86Compress(t, x86ish(100000, 4))
	rng := rand.New(rand.NewPCG(3, 4))
	failures := 0
	for i := 0; i < 400; i++ {
		bad := bytes.Clone(good)
		for k := 0; k < 1+rng.IntN(4); k++ {
			bad[rng.IntN(len(bad))] = byte(rng.Uint32())
		}
		r, err := newXZReader(bytes.NewReader(bad))
		if err == nil {
			_, err = io.ReadAll(r)
		}
		if err != nil {
			failures++
		}
	}
	if failures == 0 {
		t.Fatal("no corruption was detected at all")
	}
}

// TestXZDictionaryCap: a header declaring a dictionary above xzDictMax is
// refused before the decoder allocates it.
func TestXZDictionaryCap(t *testing.T) {
	data := x86ish(10000, 6)
	for _, prop := range []byte{29, 34, 39, 40} { // 192 MiB, 1 GiB, 3 GiB, 4 GiB - 1
		in := xzX86CompressDict(t, data, prop)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		r, err := newXZReader(bytes.NewReader(in))
		if err == nil {
			_, err = io.ReadAll(r)
		}
		runtime.ReadMemStats(&after)
		if !errors.Is(err, tcxz.ErrMemlimit) {
			t.Errorf("dictionary byte %d: got %v, want %v", prop, err, tcxz.ErrMemlimit)
		}
		if d := after.TotalAlloc - before.TotalAlloc; d > 8<<20 {
			t.Errorf("dictionary byte %d: %d bytes allocated", prop, d)
		}
		if _, err := ExtractVmlinux(in); !errors.Is(err, tcxz.ErrMemlimit) {
			t.Errorf("dictionary byte %d as a kernel payload: got %v", prop, err)
		}
	}
	// A declared dictionary at or below the cap, larger than the data's
	// own (64 KiB), is fine.
	if got := readXZ(t, xzX86CompressDict(t, data, 16)); !bytes.Equal(got, data) { // 1 MiB
		t.Fatal("1 MiB dictionary: output differs")
	}
}

// TestDecompressFirstXZ: a kernel payload is one xz stream followed by the
// uncompressed size, and a payload found by scanning runs to the end of
// the image: what follows the stream is ignored, whatever it is.
func TestDecompressFirstXZ(t *testing.T) {
	data := x86ish(50000, 3)
	stream := xzX86Compress(t, data)
	tails := map[string][]byte{
		"nothing":             nil,
		"size":                binary.LittleEndian.AppendUint32(nil, uint32(len(data))),
		"size with zero byte": {0x00, 0xb2, 0xa1, 0x03}, // not stream padding either
		"zeros":               make([]byte, 7),
		"another stream":      xzCompress(t, []byte("not part of the payload"), xz.CRC32),
		"footer lookalike":    append([]byte("YZ junk YZ"), bytes.Repeat([]byte{0xff}, 1<<20)...),
	}
	for name, tail := range tails {
		t.Run(name, func(t *testing.T) {
			got, err := decompressFirst(context.Background(), compXZ, append(bytes.Clone(stream), tail...), len(data))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("got %d bytes, want %d", len(got), len(data))
			}
		})
	}
	for _, n := range []int{0, 12, 31, len(stream) / 2, len(stream) - 1} {
		if _, err := decompressFirst(context.Background(), compXZ, stream[:n], 0); err == nil {
			t.Errorf("stream truncated to %d of %d bytes: no error", n, len(stream))
		}
	}
	n, err := xzStreamLen(append(bytes.Clone(stream), 0, 0, 0, 0, 'Y', 'Z'))
	if err != nil || n != len(stream) {
		t.Errorf("xzStreamLen = %d, %v; want %d", n, err, len(stream))
	}
}

// TestXZRealTool checks the decoder against xz(1) itself (liblzma), with
// the filters and options the kernel's build and dpkg-deb use.
func TestXZRealTool(t *testing.T) {
	xzBin := testreq.RequireTools(t, "apt-get install xz-utils", "xz")[0]
	vmlinux := makeELF(2, elfSection{".text", x86ish(1<<20, 12)},
		elfSection{".rodata", []byte(strings.Repeat("Linux version 6.1.0-99-amd64 ", 20000))})
	cases := map[string][]string{
		"kernel":      {"--x86", "--lzma2=dict=32MiB", "--check=crc32"}, // scripts/xz_wrap.sh for x86
		"x86 preset":  {"--x86", "--lzma2=preset=6"},
		"x86 blocks":  {"--x86", "--lzma2=preset=1", "--check=sha256", "--block-size=100000"},
		"delta":       {"--delta=dist=4", "--lzma2=preset=0", "--check=crc64"},
		"plain -9e":   {"-9e", "--check=none"},
		"odd lc/lp":   {"--lzma2=lc=0,lp=3,pb=0"},
		"x86 offset":  {"--x86=start=4096", "--lzma2"},
		"single byte": nil, // handled below
	}
	for name, args := range cases {
		t.Run(name, func(t *testing.T) {
			data := vmlinux
			if args == nil {
				data, args = []byte{0xe8}, []string{"--x86", "--lzma2"}
			}
			comp := runXZ(t, xzBin, data, args...)
			if got := readXZ(t, comp); !bytes.Equal(got, data) {
				t.Fatalf("got %d bytes, want %d", len(got), len(data))
			}
			if len(comp) > 64 {
				bad := bytes.Clone(comp)
				bad[len(bad)/2] ^= 0x10
				r, err := newXZReader(bytes.NewReader(bad))
				if err == nil {
					_, err = io.ReadAll(r)
				}
				if err == nil {
					t.Error("corrupted stream: no error")
				}
			}
		})
	}
	// As the kernel's build lays it out: the stream, then the size.
	comp := runXZ(t, xzBin, vmlinux, "--x86", "--lzma2=dict=32MiB", "--check=crc32")
	payload := binary.LittleEndian.AppendUint32(comp, uint32(len(vmlinux)))
	for _, version := range []uint16{0x020f, 0x0206} {
		got, err := ExtractVmlinux(fakeBzImage(payload, len(vmlinux), version))
		if err != nil || !bytes.Equal(got, vmlinux) {
			t.Fatalf("bzImage protocol %#x: %d bytes, %v", version, len(got), err)
		}
	}
	if _, err := ExtractVmlinux(fakeBzImage(payload[:len(payload)/2], len(vmlinux), 0x020f)); err == nil {
		t.Fatal("truncated payload: no error")
	}
}

func runXZ(t *testing.T, xzBin string, data []byte, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, xzBin, append([]string{"--compress", "--stdout", "--threads=1"}, args...)...)
	cmd.Stdin = bytes.NewReader(data)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("xz %v: %v: %s", args, err, stderr.String())
	}
	return out
}

// FuzzDecompressFirstXZ: whatever the bytes, finding and decoding the
// first xz stream fails or succeeds without a panic, and a success
// decodes a stream no longer than the input.
func FuzzDecompressFirstXZ(f *testing.F) {
	f.Add(xzX86Compress(f, x86ish(3000, 1)))
	f.Add(append(xzCompress(f, []byte("hello hello hello"), xz.CRC64), 0, 1, 2, 3))
	if golden, err := os.ReadFile("testdata/x86ish-120000-7.xz"); err == nil {
		f.Add(golden)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := xzStreamLen(data)
		if err == nil && (n < 32 || n > len(data)) {
			t.Fatalf("stream length %d of %d bytes", n, len(data))
		}
		decompressFirst(context.Background(), compXZ, data, 0) //nolint:errcheck // only checking for panics
	})
}
