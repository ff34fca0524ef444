package catalog

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/klauspost/compress/zstd"

	"banger/internal/fsutil"
	"banger/internal/model"
	"banger/internal/untar"
)

// Names of a bundle's members.
const (
	ManifestName = "manifest.json"
	RootfsName   = "rootfs.ext4"
)

const (
	// maxManifestSize bounds manifest.json.
	maxManifestSize = 1 << 20
	// sparseChunk is the unit in which ReadBundle skips zeros.
	sparseChunk = 64 << 10
	// extMagicOffset is where the ext2/3/4 superblock magic (0xEF53,
	// little endian) lives: superblock at 1024, s_magic at 0x38.
	extMagicOffset = 1024 + 0x38
)

// Manifest describes the root filesystem of a bundle.
type Manifest struct {
	Name         string    `json:"name"`
	Distro       string    `json:"distro,omitempty"`
	Arch         string    `json:"arch"`
	Kernel       string    `json:"kernel,omitempty"`
	RootfsSize   int64     `json:"rootfs_size"`
	RootfsSHA256 string    `json:"rootfs_sha256"`
	Created      time.Time `json:"created"`
	Source       string    `json:"source,omitempty"`
}

// validate checks the fields every manifest needs.
func (m Manifest) validate() error {
	if err := model.ValidateName(m.Name); err != nil {
		return fmt.Errorf("manifest name: %w", err)
	}
	if m.Arch == "" {
		return errors.New("manifest arch must be set")
	}
	if m.RootfsSize < extMagicOffset+2 {
		return fmt.Errorf("manifest rootfs_size %d is too small for an ext filesystem", m.RootfsSize)
	}
	if !validSHA256(m.RootfsSHA256) {
		return errors.New("manifest rootfs_sha256 must be 64 hex characters")
	}
	return nil
}

// WriteBundle writes a bundle of the ext2/3/4 filesystem image at
// rootfsPath to w: a zstd-compressed tar of manifest.json, then
// rootfs.ext4. It returns m with RootfsSize and RootfsSHA256 filled in (and
// Created, if zero, set to now); m.Name and m.Arch must be set. The file is
// streamed, never held in memory: read once to hash it, once to archive it,
// skipping its holes (their zeros are produced, not read). It must not
// change meanwhile. w is not closed.
func WriteBundle(ctx context.Context, w io.Writer, rootfsPath string, m Manifest) (Manifest, error) {
	m, err := writeBundle(ctx, w, rootfsPath, m)
	if err != nil {
		return Manifest{}, fmt.Errorf("bundle: %w", err)
	}
	return m, nil
}

func writeBundle(ctx context.Context, w io.Writer, rootfsPath string, m Manifest) (_ Manifest, err error) {
	f, err := os.Open(rootfsPath)
	if err != nil {
		return m, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return m, err
	}
	if !st.Mode().IsRegular() {
		return m, fmt.Errorf("%s is not a regular file", rootfsPath)
	}
	if err := checkExtMagic(f, st.Size()); err != nil {
		return m, fmt.Errorf("%s: %w", rootfsPath, err)
	}
	buf := make([]byte, copyBufSize)
	sum, err := hashFile(ctx, newHoleReader(f, st.Size()), st.Size(), buf)
	if err != nil {
		return m, fmt.Errorf("hash %s: %w", rootfsPath, err)
	}
	m.RootfsSize = st.Size()
	m.RootfsSHA256 = sum
	if m.Created.IsZero() {
		m.Created = time.Now().UTC().Truncate(time.Second)
	}
	if err := m.validate(); err != nil {
		return m, err
	}
	manifest, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return m, err
	}
	manifest = append(manifest, '\n')

	enc, err := zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		return m, err
	}
	defer func() {
		if err != nil {
			// Release the encoder's goroutines without writing more.
			enc.Reset(io.Discard)
			enc.Close()
		}
	}()
	tw := tar.NewWriter(enc)
	hdr := func(name string, size int64) *tar.Header {
		return &tar.Header{
			Typeflag: tar.TypeReg,
			Name:     name,
			Size:     size,
			Mode:     0o644,
			ModTime:  m.Created,
		}
	}
	if err := tw.WriteHeader(hdr(ManifestName, int64(len(manifest)))); err != nil {
		return m, err
	}
	if _, err := tw.Write(manifest); err != nil {
		return m, err
	}
	if err := tw.WriteHeader(hdr(RootfsName, m.RootfsSize)); err != nil {
		return m, err
	}
	n, err := io.CopyBuffer(tw, ctxReader{ctx, newHoleReader(f, m.RootfsSize)}, buf)
	if err != nil {
		return m, fmt.Errorf("archive %s: %w", rootfsPath, err)
	}
	// Rather than hashing it again, check that the file did not change
	// since it was hashed.
	st2, err := f.Stat()
	if err != nil {
		return m, err
	}
	if n != m.RootfsSize || st2.Size() != st.Size() || !st2.ModTime().Equal(st.ModTime()) {
		return m, fmt.Errorf("%s changed while it was being archived", rootfsPath)
	}
	if err := tw.Close(); err != nil {
		return m, err
	}
	if err := enc.Close(); err != nil {
		return m, err
	}
	return m, nil
}

// hashFile returns the hex SHA-256 of what r yields, which must be exactly
// size bytes.
func hashFile(ctx context.Context, r io.Reader, size int64, buf []byte) (string, error) {
	h := sha256.New()
	n, err := io.CopyBuffer(h, ctxReader{ctx, r}, buf)
	if err != nil {
		return "", err
	}
	if n != size {
		return "", fmt.Errorf("read %d bytes, expected %d", n, size)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// checkExtMagic checks the ext2/3/4 superblock magic of a size-byte file.
func checkExtMagic(r io.ReaderAt, size int64) error {
	if size < extMagicOffset+2 {
		return fmt.Errorf("%d bytes is too small for an ext filesystem", size)
	}
	var b [2]byte
	if _, err := r.ReadAt(b[:], extMagicOffset); err != nil {
		return err
	}
	return checkMagicBytes(b[:])
}

func checkMagicBytes(b []byte) error {
	if b[0] != 0x53 || b[1] != 0xEF {
		return errors.New("not an ext2/3/4 filesystem (no superblock magic)")
	}
	return nil
}

// ReadBundle reads a bundle from r, checks it and writes its root
// filesystem to dir/rootfs.ext4 (dir is created if needed; an existing
// rootfs.ext4 is replaced), returning the manifest and that path.
//
// The bundle must hold exactly manifest.json (first, at most 1 MiB) and
// rootfs.ext4, both regular files; the rootfs must have the manifest's size
// and SHA-256 and an ext superblock. It is written sparsely: 64 KiB chunks
// that are all zeros become holes. It goes to a temporary file renamed
// into place at the end, so on error nothing is left in dir.
func ReadBundle(ctx context.Context, r io.Reader, dir string) (m Manifest, rootfsPath string, err error) {
	m, rootfsPath, err = readBundle(ctx, r, dir)
	if err != nil {
		return Manifest{}, "", fmt.Errorf("bundle: %w", err)
	}
	return m, rootfsPath, nil
}

func readBundle(ctx context.Context, r io.Reader, dir string) (_ Manifest, _ string, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Manifest{}, "", err
	}
	dec, err := zstd.NewReader(ctxReader{ctx, r})
	if err != nil {
		return Manifest{}, "", err
	}
	defer dec.Close()

	var (
		m        *Manifest
		rootfs   *fsutil.AtomicFile
		sawFirst bool
	)
	final := filepath.Join(dir, RootfsName)
	defer func() {
		if rootfs != nil {
			rootfs.Abort() // a no-op once committed
		}
	}()
	err = untar.Walk(ctx, dec, untar.WalkOptions{Limits: untar.Limits{MaxEntries: maxBundleEntries}}, func(e untar.Entry, r io.Reader) error {
		h := e.Header
		if e.Name == "" && h.Typeflag == tar.TypeDir {
			return nil // "./", as written by `tar -C dir .`
		}
		switch h.Typeflag {
		case tar.TypeReg, tar.TypeGNUSparse:
		case tar.TypeSymlink, tar.TypeLink:
			return fmt.Errorf("member %q is a link", h.Name)
		default:
			return fmt.Errorf("member %q is not a regular file", h.Name)
		}
		first := !sawFirst
		sawFirst = true
		var err error
		switch e.Name {
		case ManifestName:
			if m != nil {
				return fmt.Errorf("duplicate %s", ManifestName)
			}
			if !first {
				return fmt.Errorf("%s must be the first member", ManifestName)
			}
			m, err = readManifest(r, h.Size)
		case RootfsName:
			if m == nil {
				return fmt.Errorf("%s comes before %s", RootfsName, ManifestName)
			}
			if rootfs != nil {
				return fmt.Errorf("duplicate %s", RootfsName)
			}
			rootfs, err = writeSparse(ctx, r, final, h.Size, *m)
		default:
			return fmt.Errorf("unexpected member %q", h.Name)
		}
		return err
	})
	if ne := (*untar.NameError)(nil); errors.As(err, &ne) {
		return Manifest{}, "", fmt.Errorf("member %q: %w", ne.Name, err)
	}
	if err != nil {
		return Manifest{}, "", err
	}
	if m == nil {
		return Manifest{}, "", fmt.Errorf("no %s", ManifestName)
	}
	if rootfs == nil {
		return Manifest{}, "", fmt.Errorf("no %s", RootfsName)
	}
	if err := rootfs.Commit(); err != nil {
		return Manifest{}, "", err
	}
	return *m, final, nil
}

// maxBundleEntries caps a bundle's members (it has two, plus maybe "./").
const maxBundleEntries = 16

func readManifest(r io.Reader, size int64) (*Manifest, error) {
	if size > maxManifestSize {
		return nil, fmt.Errorf("%s is larger than %d bytes", ManifestName, maxManifestSize)
	}
	data, err := io.ReadAll(io.LimitReader(r, maxManifestSize))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", ManifestName, err)
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("parse %s: %w", ManifestName, err)
	}
	if err := m.validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// writeSparse copies the size-byte rootfs from r to the temporary file of
// target (mode 0644), leaving holes for all-zero chunks, and checks it
// against m. It returns the file, for the caller to commit; on error the
// file is removed.
func writeSparse(ctx context.Context, r io.Reader, target string, size int64, m Manifest) (_ *fsutil.AtomicFile, err error) {
	if size != m.RootfsSize {
		return nil, fmt.Errorf("rootfs size mismatch: member has %d bytes, manifest says %d", size, m.RootfsSize)
	}
	f, err := fsutil.CreateAtomic(target, 0o644)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			f.Abort()
		}
	}()
	h := sha256.New()
	buf := make([]byte, sparseChunk)
	zero := make([]byte, sparseChunk)
	checked := false
	for off := int64(0); off < size; {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n := int(min(int64(sparseChunk), size-off))
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			return nil, fmt.Errorf("read %s: %w", RootfsName, err)
		}
		h.Write(buf[:n])
		if !checked && off <= extMagicOffset && off+int64(n) >= extMagicOffset+2 {
			if err := checkMagicBytes(buf[extMagicOffset-off:]); err != nil {
				return nil, fmt.Errorf("%s: %w", RootfsName, err)
			}
			checked = true
		}
		if !bytes.Equal(buf[:n], zero[:n]) {
			if _, err := f.WriteAt(buf[:n], off); err != nil {
				return nil, err
			}
		}
		off += int64(n)
	}
	if !checked {
		// Unreachable: validate requires the size to cover the magic,
		// and the first chunk does.
		return nil, fmt.Errorf("%s: superblock magic not checked", RootfsName)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != m.RootfsSHA256 {
		return nil, fmt.Errorf("rootfs sha256 mismatch: got %s, manifest says %s", got, m.RootfsSHA256)
	}
	if err := f.Truncate(size); err != nil {
		return nil, err
	}
	return f, nil
}
