package catalog

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestHoleReader(t *testing.T) {
	const size = 8 << 20
	layouts := map[string][]int64{ // offsets of 5000-byte data runs
		"all hole":         nil,
		"data at start":    {0},
		"data at end":      {size - 5000},
		"scattered":        {0, 70000, 1 << 20, 3<<20 + 17, size - 5000},
		"hole at both end": {2 << 20, 5 << 20},
	}
	for name, offs := range layouts {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "f")
			f, err := os.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			for i, off := range offs {
				if _, err := f.WriteAt(bytes.Repeat([]byte{byte(i + 1)}, 5000), off); err != nil {
					t.Fatal(err)
				}
			}
			if err := f.Truncate(size); err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			for _, bufSize := range []int{1000, 4096, 1 << 20} {
				got, err := readAllBuf(newHoleReader(f, size), bufSize)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("content differs (len %d)", len(got))
				}
				got, err = readAllBuf(newHoleReader(f, size-100), bufSize)
				if err != nil || !bytes.Equal(got, want[:size-100]) {
					t.Fatalf("prefix differs: %v", err)
				}
			}
		})
	}

	// A file shorter than announced is an error, not silent zeros.
	p := filepath.Join(t.TempDir(), "short")
	writeTestFile(t, p, []byte("abc"))
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.ReadAll(newHoleReader(f, 10)); err == nil {
		t.Error("short file read without error")
	}
}

// readAllBuf reads r to EOF with reads of at most bufSize bytes.
func readAllBuf(r io.Reader, bufSize int) ([]byte, error) {
	var out []byte
	buf := make([]byte, bufSize)
	for {
		n, err := r.Read(buf)
		out = append(out, buf[:n]...)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}
