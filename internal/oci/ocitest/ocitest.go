// Package ocitest builds hostile layer contents that Go's archive/tar
// cannot write, for the OCI unit tests and the end-to-end hostile-image
// scenario alike.
package ocitest

import (
	"archive/tar"
	"fmt"
)

// GNUSparseTar is a tar holding one old-style GNU sparse file (type 'S')
// called name, of realSize bytes (less than 8 GiB), whose only data is
// "x" at offset 0: a few blocks that expand to realSize. Its mtime is
// mtime (Unix seconds).
func GNUSparseTar(name string, realSize, mtime int64) []byte {
	h := make([]byte, 512)
	copy(h[0:], name)
	copy(h[100:], "0000644\x00")
	copy(h[108:], "0000000\x00")
	copy(h[116:], "0000000\x00")
	copy(h[124:], fmt.Sprintf("%011o\x00", 1)) // stored bytes
	copy(h[136:], fmt.Sprintf("%011o\x00", mtime))
	h[156] = tar.TypeGNUSparse
	copy(h[257:], "ustar  \x00")
	copy(h[386:], fmt.Sprintf("%011o\x00%011o\x00", 0, 1)) // sparse[0]: offset 0, 1 byte
	copy(h[483:], fmt.Sprintf("%011o\x00", realSize))
	copy(h[148:], "        ")
	var sum int
	for _, c := range h {
		sum += int(c)
	}
	copy(h[148:], fmt.Sprintf("%06o\x00 ", sum))
	data := make([]byte, 512)
	data[0] = 'x'
	return append(append(h, data...), make([]byte, 1024)...)
}
