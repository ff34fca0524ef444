package kernel

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Offsets in the x86 boot protocol's setup header
// (Documentation/arch/x86/boot.rst).
const (
	setupSectsOff    = 0x1f1
	headerMagicOff   = 0x202
	versionOff       = 0x206
	payloadOffsetOff = 0x248
	payloadLengthOff = 0x24c
	minSetupHeader   = 0x250
)

var elfMagic = []byte{0x7f, 'E', 'L', 'F'}

// maxScanAttempts bounds how many magic occurrences are tried when the
// setup header does not locate the payload.
const maxScanAttempts = 64

// ExtractVmlinux returns the ELF vmlinux inside a kernel image. An ELF input
// is returned as is. A bzImage (one with the "HdrS" setup header) has its
// payload located through the setup header's payload_offset and
// payload_length fields, falling back to scanning the image for compression
// magics, and decompressed; xz (including the x86 BCJ filter the kernel
// uses), gzip, zstd, legacy lz4, bzip2 and lzma payloads are supported. A
// bare compressed ELF (for example a vmlinux.xz) is accepted too. The result
// is checked to be a well-formed ELF file.
func ExtractVmlinux(image []byte) ([]byte, error) {
	return extractVmlinux(context.Background(), image)
}

func extractVmlinux(ctx context.Context, image []byte) ([]byte, error) {
	if bytes.HasPrefix(image, elfMagic) {
		if err := checkELF(image); err != nil {
			return nil, err
		}
		return image, nil
	}
	if len(image) >= minSetupHeader && string(image[headerMagicOff:headerMagicOff+4]) == "HdrS" {
		return extractBzImage(ctx, image)
	}
	if c := sniff(image); c != compNone {
		out, err := decompressFirst(ctx, c, image, 0)
		if err != nil {
			return nil, fmt.Errorf("decompress %s image: %w", c, err)
		}
		if err := checkELF(out); err != nil {
			return nil, fmt.Errorf("decompressed %s image: %w", c, err)
		}
		return out, nil
	}
	return nil, errors.New("not an ELF file, a bzImage or a compressed kernel")
}

func extractBzImage(ctx context.Context, image []byte) ([]byte, error) {
	var firstErr error
	tried := map[int]bool{}
	try := func(off, end int, hint bool) ([]byte, bool) {
		if tried[off] {
			return nil, false
		}
		tried[off] = true
		c := sniff(image[off:end])
		if c == compNone {
			if firstErr == nil {
				firstErr = fmt.Errorf("no known compression magic at payload offset %#x", off)
			}
			return nil, false
		}
		n := 0
		if hint {
			n = sizeHint(image[off:end])
		}
		out, err := decompressFirst(ctx, c, image[off:end], n)
		if err == nil {
			err = checkELF(out)
		}
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("%s payload at %#x: %w", c, off, err)
			}
			return nil, false
		}
		return out, true
	}

	if off, end, ok := bzPayload(image); ok {
		if out, ok := try(off, end, true); ok {
			return out, nil
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for i, off := range scanMagics(image) {
		if i >= maxScanAttempts {
			break
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if out, ok := try(off, len(image), false); ok {
			return out, nil
		}
	}
	if firstErr == nil {
		firstErr = errors.New("no compressed payload found")
	}
	return nil, fmt.Errorf("bzImage: %w", firstErr)
}

// bzPayload returns the payload's bounds from the setup header, if the boot
// protocol version has them (2.08 and later) and they are in range.
func bzPayload(image []byte) (off, end int, ok bool) {
	if binary.LittleEndian.Uint16(image[versionOff:]) < 0x0208 {
		return 0, 0, false
	}
	sects := int(image[setupSectsOff])
	if sects == 0 {
		sects = 4
	}
	base := (sects + 1) * 512
	po := int(binary.LittleEndian.Uint32(image[payloadOffsetOff:]))
	pl := int(binary.LittleEndian.Uint32(image[payloadLengthOff:]))
	off = base + po
	end = off + pl
	if pl <= 0 || po < 0 || off >= len(image) || end > len(image) || end < off {
		return 0, 0, false
	}
	return off, end, true
}

// sizeHint reads the uncompressed length that the kernel build appends to
// its payload, as a preallocation hint only, ignoring implausible values
// (kernels compress about 4 to 10 times).
func sizeHint(payload []byte) int {
	if len(payload) < 8 {
		return 0
	}
	n := int(binary.LittleEndian.Uint32(payload[len(payload)-4:]))
	if n < len(payload) || n > 32*len(payload) || n > 1<<30 {
		return 0
	}
	return n
}

// scanMagics returns the offsets of all compression magics in image, in
// ascending order.
func scanMagics(image []byte) []int {
	var offs []int
	for _, m := range magics {
		for i := 0; ; {
			j := bytes.Index(image[i:], m.magic)
			if j < 0 {
				break
			}
			offs = append(offs, i+j)
			i += j + 1
			if len(offs) > 16*maxScanAttempts {
				break
			}
		}
	}
	sort.Ints(offs)
	return offs
}

// checkELF verifies that data is a parseable ELF file.
func checkELF(data []byte) error {
	if !bytes.HasPrefix(data, elfMagic) {
		n := min(len(data), 4)
		return fmt.Errorf("result is not an ELF file (starts with %q)", strings.ToValidUTF8(string(data[:n]), "?"))
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("result is not a valid ELF file: %w", err)
	}
	f.Close()
	return nil
}
