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
