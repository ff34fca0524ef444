package kernel

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// DefaultModules are the modules a banger guest needs, in the order given
// in HOST-NOTES (ResolveModules orders them by their dependencies anyway):
// virtio transport and devices, then ext4 and what it needs, then vsock,
// then the memory balloon (virtio_balloon: with the kernel's
// CONFIG_PAGE_REPORTING it hands freed guest pages back to the host; it
// loads last, after the root disk's drivers, so it costs the boot path
// nothing it waits on). The vsock modules and the balloon are optional:
// Build accepts a kernel without them.
var DefaultModules = []string{
	"virtio_ring", "virtio", "virtio_mmio", "virtio_blk",
	"failover", "net_failover", "virtio_net", "virtio_console",
	"crc16", "crc32c_generic", "mbcache", "jbd2", "ext4",
	"vmw_vsock_virtio_transport_common", "vsock", "vmw_vsock_virtio_transport",
	"virtio_balloon",
}

// optionalModules are the members of DefaultModules that Build lets be
// missing.
func optionalModules() []string {
	return []string{"vmw_vsock_virtio_transport_common", "vsock", "vmw_vsock_virtio_transport", "virtio_balloon"}
}

// Module is one resolved kernel module.
type Module struct {
	Name    string   // canonical name, dashes normalised to underscores
	Path    string   // path relative to the modules dir, slash-separated
	Depends []string // names from the module's depends= field
	Data    []byte   // decompressed .ko contents
}

// moduleSuffixes are the module file name endings recognised, with the
// compression each implies.
var moduleSuffixes = []struct {
	suffix string
	c      compression
}{
	{".ko", compNone},
	{".ko.xz", compXZ},
	{".ko.zst", compZstd},
	{".ko.gz", compGzip},
}

// moduleName normalises a module name the way the kernel does: dashes
// become underscores.
func moduleName(s string) string {
	return strings.ReplaceAll(strings.TrimSpace(s), "-", "_")
}

// ResolveModules finds each wanted module under modulesDir (any *.ko,
// *.ko.xz, *.ko.zst or *.ko.gz below it; modules.dep is not needed: each
// module's depends= field is read from its ELF .modinfo section), pulls in
// dependencies recursively, and returns them in a valid load order:
// dependencies before dependents, no duplicates, and otherwise in the order
// of want, so the result is deterministic.
//
// A module built into the kernel (listed in modules.builtin or
// modules.builtin.modinfo, if present) is skipped. A wanted module that is
// neither present nor built in is an error naming it, unless it is listed
// in optional, in which case it is left out, as it is when one of its
// dependencies is missing. A dependency cycle is an error.
func ResolveModules(modulesDir string, want, optional []string) ([]Module, error) {
	r, err := newResolver(modulesDir)
	if err != nil {
		return nil, fmt.Errorf("resolve modules in %s: %w", modulesDir, err)
	}
	opt := map[string]bool{}
	for _, o := range optional {
		opt[moduleName(o)] = true
	}
	for _, w := range want {
		name := moduleName(w)
		if name == "" {
			continue
		}
		mark := len(r.order)
		err := r.visit(name, "", nil)
		if err == nil {
			continue
		}
		var missing *missingModuleError
		if opt[name] && errors.As(err, &missing) {
			// Undo what this module pulled in, unless it is needed by
			// something else later (it will be visited again then).
			for _, n := range r.order[mark:] {
				delete(r.state, n)
			}
			r.order = r.order[:mark]
			continue
		}
		return nil, fmt.Errorf("resolve modules in %s: %w", modulesDir, err)
	}
	mods := make([]Module, 0, len(r.order))
	for _, n := range r.order {
		mods = append(mods, *r.loaded[n])
	}
	return mods, nil
}

type missingModuleError struct {
	name, neededBy string
}

func (e *missingModuleError) Error() string {
	if e.neededBy != "" {
		return fmt.Sprintf("module %s (needed by %s) not found and not built in", e.name, e.neededBy)
	}
	return fmt.Sprintf("module %s not found and not built in", e.name)
}

const (
	unvisited = iota
	visiting
	visited
)

type resolver struct {
	dir     string
	index   map[string]string // name -> slash path relative to dir
	builtin map[string]bool
	loaded  map[string]*Module
	state   map[string]int
	order   []string
}

func newResolver(dir string) (*resolver, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", dir)
	}
	r := &resolver{
		dir:     dir,
		index:   map[string]string{},
		builtin: map[string]bool{},
		loaded:  map[string]*Module{},
		state:   map[string]int{},
	}
	if err := r.indexModules(); err != nil {
		return nil, err
	}
	if err := r.readBuiltin(); err != nil {
		return nil, err
	}
	return r, nil
}

// indexModules maps module names to files. When a name is found more than
// once, updates/ wins over kernel/, which wins over anything else, as with
// depmod's default search order; ties go to the lexically first path.
func (r *resolver) indexModules() error {
	rank := func(rel string) int {
		switch strings.SplitN(rel, "/", 2)[0] {
		case "updates":
			return 0
		case "kernel":
			return 1
		}
		return 2
	}
	return filepath.WalkDir(r.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !d.Type().IsRegular() {
			return nil
		}
		base := d.Name()
		for _, s := range moduleSuffixes {
			stem, ok := strings.CutSuffix(base, s.suffix)
			if !ok || stem == "" {
				continue
			}
			rel, err := filepath.Rel(r.dir, p)
			if err != nil {
				return err
			}
			rel = filepath.ToSlash(rel)
			name := moduleName(stem)
			if old, ok := r.index[name]; !ok || rank(rel) < rank(old) {
				r.index[name] = rel
			}
			break
		}
		return nil
	})
}

// readBuiltin reads the names of built-in modules from modules.builtin
// (one path per line) and modules.builtin.modinfo (NUL-separated
// name.key=value strings); both are optional.
func (r *resolver) readBuiltin() error {
	data, err := os.ReadFile(filepath.Join(r.dir, "modules.builtin"))
	if err == nil {
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			r.builtin[moduleName(strings.TrimSuffix(path.Base(line), ".ko"))] = true
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	data, err = os.ReadFile(filepath.Join(r.dir, "modules.builtin.modinfo"))
	if err == nil {
		for _, field := range bytes.Split(data, []byte{0}) {
			if name, _, ok := strings.Cut(string(field), "."); ok && name != "" {
				r.builtin[moduleName(name)] = true
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// visit appends name and, first, its dependencies to r.order.
func (r *resolver) visit(name, neededBy string, chain []string) error {
	switch r.state[name] {
	case visited:
		return nil
	case visiting:
		i := 0
		for i < len(chain) && chain[i] != name {
			i++
		}
		cycle := append(append([]string{}, chain[i:]...), name)
		return fmt.Errorf("dependency cycle: %s", strings.Join(cycle, " -> "))
	}
	if r.builtin[name] {
		return nil
	}
	m, err := r.load(name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return &missingModuleError{name: name, neededBy: neededBy}
		}
		return err
	}
	r.state[name] = visiting
	chain = append(chain, name)
	for _, dep := range m.Depends {
		if err := r.visit(dep, name, chain); err != nil {
			delete(r.state, name)
			return err
		}
	}
	r.state[name] = visited
	r.order = append(r.order, name)
	return nil
}

// load reads, decompresses and parses one module, once.
func (r *resolver) load(name string) (*Module, error) {
	if m, ok := r.loaded[name]; ok {
		return m, nil
	}
	rel, ok := r.index[name]
	if !ok {
		return nil, fs.ErrNotExist
	}
	data, err := readModuleFile(filepath.Join(r.dir, filepath.FromSlash(rel)))
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", name, err)
	}
	info, err := modinfo(data)
	if err != nil {
		return nil, fmt.Errorf("module %s (%s): %w", name, rel, err)
	}
	var deps []string
	for _, d := range strings.Split(info["depends"], ",") {
		if d = moduleName(d); d != "" && d != name {
			deps = append(deps, d)
		}
	}
	m := &Module{Name: name, Path: rel, Depends: deps, Data: data}
	r.loaded[name] = m
	return m, nil
}

// readModuleFile reads a module file, decompressing it according to its
// name's suffix.
func readModuleFile(p string) ([]byte, error) {
	raw, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	c := compNone
	for _, s := range moduleSuffixes {
		if strings.HasSuffix(p, s.suffix) {
			c = s.c
		}
	}
	if c == compNone {
		return raw, nil
	}
	zr, done, err := newDecompressor(c, bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("decompress %s: %w", filepath.Base(p), err)
	}
	defer done()
	data, err := io.ReadAll(zr)
	if err != nil {
		return nil, fmt.Errorf("decompress %s: %w", filepath.Base(p), err)
	}
	return data, nil
}

// modinfo returns the key=value fields of a module's .modinfo section. For
// repeated keys the first value is kept.
func modinfo(ko []byte) (map[string]string, error) {
	if !bytes.HasPrefix(ko, elfMagic) {
		return nil, errors.New("not an ELF file")
	}
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, fmt.Errorf("parse ELF: %w", err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, errors.New("no .modinfo section")
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("read .modinfo: %w", err)
	}
	info := map[string]string{}
	for _, field := range bytes.Split(data, []byte{0}) {
		k, v, ok := strings.Cut(string(field), "=")
		if !ok || k == "" {
			continue
		}
		if _, dup := info[k]; !dup {
			info[k] = v
		}
	}
	return info, nil
}
