package kernel

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// Layout describes a kernel tree laid out like `dpkg -x` output. Paths are
// dir (as given to FindLayout) joined with the relative location.
type Layout struct {
	// KernelPath is dir/boot/vmlinux-VERSION or dir/boot/vmlinuz-VERSION
	// (vmlinux- is preferred when both exist).
	KernelPath string
	// Version is the kernel release, e.g. 6.1.0-57-amd64.
	Version string
	// ModulesDir is dir/lib/modules/VERSION or dir/usr/lib/modules/VERSION,
	// or "" if the tree has no modules for that version.
	ModulesDir string
}

// FindLayout locates the kernel and its modules under dir. The kernel is
// boot/vmlinux-VERSION or boot/vmlinuz-VERSION; modules are looked for in
// lib/modules/VERSION, then usr/lib/modules/VERSION. A tree with kernels of
// more than one version is an error. As a fallback, an unversioned
// boot/vmlinux or boot/vmlinuz is accepted when exactly one modules
// directory says which version it is.
func FindLayout(dir string) (Layout, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return Layout{}, fmt.Errorf("find kernel layout: %w", err)
	}
	if !fi.IsDir() {
		return Layout{}, fmt.Errorf("find kernel layout: %s is not a directory", dir)
	}
	boot := filepath.Join(dir, "boot")
	entries, err := os.ReadDir(boot)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return Layout{}, fmt.Errorf("find kernel layout: %w", err)
	}
	kernels := map[string]string{} // version -> file name
	for _, e := range entries {
		name := e.Name()
		var version string
		var ok bool
		prefer := false
		if version, ok = strings.CutPrefix(name, "vmlinux-"); ok {
			prefer = true
		} else if version, ok = strings.CutPrefix(name, "vmlinuz-"); !ok {
			continue
		}
		if version == "" || !isRegular(filepath.Join(boot, name)) {
			continue
		}
		if _, seen := kernels[version]; !seen || prefer {
			kernels[version] = name
		}
	}
	var versions []string
	for v := range kernels {
		versions = append(versions, v)
	}
	sort.Strings(versions)
	switch len(versions) {
	case 1:
		v := versions[0]
		return Layout{
			KernelPath: filepath.Join(boot, kernels[v]),
			Version:    v,
			ModulesDir: modulesDir(dir, v),
		}, nil
	case 0:
		return unversionedLayout(dir)
	default:
		return Layout{}, fmt.Errorf("find kernel layout: %s holds kernels of several versions (%s)", boot, strings.Join(versions, ", "))
	}
}

func unversionedLayout(dir string) (Layout, error) {
	var kernel string
	for _, name := range []string{"vmlinux", "vmlinuz"} {
		if p := filepath.Join(dir, "boot", name); isRegular(p) {
			kernel = p
			break
		}
	}
	if kernel == "" {
		return Layout{}, fmt.Errorf("find kernel layout: no boot/vmlinuz-VERSION or boot/vmlinux-VERSION under %s", dir)
	}
	var versions []string
	for _, base := range []string{"lib/modules", "usr/lib/modules"} {
		entries, _ := os.ReadDir(filepath.Join(dir, base))
		for _, e := range entries {
			if e.IsDir() && !slices.Contains(versions, e.Name()) {
				versions = append(versions, e.Name())
			}
		}
	}
	if len(versions) != 1 {
		return Layout{}, fmt.Errorf("find kernel layout: cannot tell the version of %s (%d module directories)", kernel, len(versions))
	}
	return Layout{KernelPath: kernel, Version: versions[0], ModulesDir: modulesDir(dir, versions[0])}, nil
}

func modulesDir(dir, version string) string {
	for _, base := range []string{"lib/modules", "usr/lib/modules"} {
		p := filepath.Join(dir, base, version)
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			return p
		}
	}
	return ""
}

func isRegular(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}
