package kernel

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"banger/internal/fsutil"
)

// Names of the files Build writes in its destination directory.
const (
	VmlinuxName   = "vmlinux"
	InitramfsName = "initramfs.img"
)

// BuildResult describes what Build produced.
type BuildResult struct {
	Version       string   // kernel release, e.g. 6.1.0-57-amd64
	VmlinuxSHA256 string   // hex SHA-256 of destDir/vmlinux
	Modules       []string // module names, in load order
}

// Build imports a kernel: src is a .deb file, a zstd-compressed tar of a
// tree (a catalog's tar.zst kernel), or a directory laid out like `dpkg -x`
// output. It writes destDir/vmlinux (the uncompressed ELF kernel)
// and destDir/initramfs.img (a gzip-compressed cpio archive) containing:
//
//	init                     the agentBinary, mode 0755 (the guest agent is /init)
//	lib/modules/NAME.ko      each module of DefaultModules and their dependencies, decompressed
//	etc/banger/modules       the load order, one module path per line ("lib/modules/virtio.ko")
//	dev proc sys newroot run tmp   empty directories (0755; tmp 01777)
//
// Modules built into the kernel are left out, and so are the vsock modules
// if the kernel lacks them; a tree without a modules directory yields an
// initramfs without modules. A .deb is unpacked into a temporary directory
// inside destDir, removed afterwards. Outputs are written to temporary files
// in destDir and renamed into place, so on error, including cancellation of
// ctx, no half-written file is left in destDir.
func Build(ctx context.Context, src, destDir string, agentBinary []byte) (BuildResult, error) {
	res, err := build(ctx, src, destDir, agentBinary)
	if err != nil {
		return BuildResult{}, fmt.Errorf("build kernel from %s: %w", src, err)
	}
	return res, nil
}

func build(ctx context.Context, src, destDir string, agentBinary []byte) (BuildResult, error) {
	if len(agentBinary) == 0 {
		return BuildResult{}, errors.New("empty agent binary")
	}
	fi, err := os.Stat(src)
	if err != nil {
		return BuildResult{}, err
	}
	if err := os.MkdirAll(destDir, 0o755); err != nil {
		return BuildResult{}, err
	}
	tree := src
	if !fi.IsDir() {
		tmp, err := os.MkdirTemp(destDir, ".import-*")
		if err != nil {
			return BuildResult{}, err
		}
		defer os.RemoveAll(tmp)
		if err := extractFile(ctx, src, tmp); err != nil {
			return BuildResult{}, fmt.Errorf("extract package: %w", err)
		}
		tree = tmp
	}

	layout, err := FindLayout(tree)
	if err != nil {
		return BuildResult{}, err
	}
	image, err := os.ReadFile(layout.KernelPath)
	if err != nil {
		return BuildResult{}, err
	}
	vmlinux, err := extractVmlinux(ctx, image)
	if err != nil {
		return BuildResult{}, fmt.Errorf("extract vmlinux from %s: %w", filepath.Base(layout.KernelPath), err)
	}
	image = nil

	var mods []Module
	if layout.ModulesDir != "" {
		mods, err = ResolveModules(layout.ModulesDir, DefaultModules, optionalModules())
		if err != nil {
			return BuildResult{}, err
		}
	}
	if err := ctx.Err(); err != nil {
		return BuildResult{}, err
	}

	var initramfs bytes.Buffer
	if err := WriteInitramfs(&initramfs, initramfsFiles(agentBinary, mods)); err != nil {
		return BuildResult{}, err
	}

	// Write both outputs before renaming either into place.
	vmF, err := writeTemp(ctx, filepath.Join(destDir, VmlinuxName), vmlinux)
	if err != nil {
		return BuildResult{}, fmt.Errorf("write vmlinux: %w", err)
	}
	defer vmF.Abort() // a no-op once committed
	rdF, err := writeTemp(ctx, filepath.Join(destDir, InitramfsName), initramfs.Bytes())
	if err != nil {
		return BuildResult{}, fmt.Errorf("write initramfs: %w", err)
	}
	defer rdF.Abort()
	if err := ctx.Err(); err != nil {
		return BuildResult{}, err
	}
	if err := vmF.Commit(); err != nil {
		return BuildResult{}, err
	}
	if err := rdF.Commit(); err != nil {
		return BuildResult{}, err
	}

	sum := sha256.Sum256(vmlinux)
	res := BuildResult{Version: layout.Version, VmlinuxSHA256: hex.EncodeToString(sum[:])}
	for _, m := range mods {
		res.Modules = append(res.Modules, m.Name)
	}
	return res, nil
}

// initramfsFiles lays out the initramfs described in Build's doc comment.
func initramfsFiles(agent []byte, mods []Module) []InitramfsFile {
	files := []InitramfsFile{
		{Path: "dev", Mode: os.ModeDir | 0o755},
		{Path: "proc", Mode: os.ModeDir | 0o755},
		{Path: "sys", Mode: os.ModeDir | 0o755},
		{Path: "newroot", Mode: os.ModeDir | 0o755},
		{Path: "run", Mode: os.ModeDir | 0o755},
		{Path: "tmp", Mode: os.ModeDir | os.ModeSticky | 0o777},
		{Path: "init", Mode: 0o755, Data: agent},
	}
	var order strings.Builder
	for _, m := range mods {
		p := "lib/modules/" + m.Name + ".ko"
		order.WriteString(p + "\n")
		files = append(files, InitramfsFile{Path: p, Mode: 0o644, Data: m.Data})
	}
	files = append(files, InitramfsFile{Path: "etc/banger/modules", Mode: 0o644, Data: []byte(order.String())})
	return files
}

// isKernelFile selects what Build needs from a package: the kernel image
// and the modules tree.
func isKernelFile(name string) bool {
	for _, dir := range []string{"boot", "lib/modules", "usr/lib/modules"} {
		if name == dir || strings.HasPrefix(name, dir+"/") {
			return true
		}
	}
	return false
}

// writeTemp writes data (mode 0644) to the temporary file of target,
// for the caller to commit; on error nothing is left behind.
func writeTemp(ctx context.Context, target string, data []byte) (*fsutil.AtomicFile, error) {
	f, err := fsutil.CreateAtomic(target, 0o644)
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(f, ctxReader{ctx, bytes.NewReader(data)}); err != nil {
		f.Abort()
		return nil, err
	}
	return f, nil
}

// extractFile unpacks the kernel files of a .deb or of a zstd tar (told
// apart by the zstd magic) into dir, with the same checks either way.
func extractFile(ctx context.Context, src, dir string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	magic := make([]byte, 4)
	if _, err := io.ReadFull(f, magic); err != nil || !bytes.Equal(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}) {
		return extractDeb(ctx, src, dir, isKernelFile)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	r, closeDec, err := newDecompressor(compZstd, bufio.NewReaderSize(ctxReader{ctx, f}, 1<<20))
	if err != nil {
		return err
	}
	defer closeDec()
	return untar(ctx, r, dir, isKernelFile)
}
