// Package paths computes where banger keeps its files, following the XDG base
// directory variables so that tests (and users) can isolate a whole banger
// installation by setting XDG_STATE_HOME, XDG_CONFIG_HOME and XDG_RUNTIME_DIR.
package paths

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Layout is the set of directories one banger installation uses.
type Layout struct {
	State   string // $XDG_STATE_HOME/banger: store, kernels, images, VM disks
	Config  string // $XDG_CONFIG_HOME/banger: config.toml, ssh keys
	Runtime string // $XDG_RUNTIME_DIR/banger: sockets, pid files
	// RuntimeParent, when set, is a directory banger makes itself to
	// hold Runtime: /tmp/banger-UID when there is no XDG_RUNTIME_DIR.
	// Another local user can create it first, so it gets the same
	// checks as Runtime.
	RuntimeParent string
	// RuntimeManaged marks a Runtime made by the service manager
	// (BANGER_RUNTIME_DIR, the installed service's): systemd creates it
	// with RuntimeDirectoryMode=0755, so only write access for group
	// and others is refused.
	RuntimeManaged bool
}

// FromEnv resolves the layout from the environment, with the XDG defaults
// when a variable is unset. Without XDG_RUNTIME_DIR it uses
// /run/user/UID when that exists and /tmp/banger-UID otherwise.
func FromEnv() (Layout, error) { return fromEnv(InstallMetadataFile) }

// fromEnv is FromEnv reading the install metadata from metadataFile.
func fromEnv(metadataFile string) (Layout, error) {
	home, _ := os.UserHomeDir()
	base := func(env, def string) (string, error) {
		if v := os.Getenv(env); v != "" {
			if !filepath.IsAbs(v) {
				return "", fmt.Errorf("%s must be an absolute path, got %q", env, v)
			}
			return v, nil
		}
		if home == "" {
			return "", fmt.Errorf("%s is unset and there is no home directory", env)
		}
		return filepath.Join(home, def), nil
	}
	state, err := base("XDG_STATE_HOME", ".local/state")
	if err != nil {
		return Layout{}, err
	}
	config, err := base("XDG_CONFIG_HOME", ".config")
	if err != nil {
		return Layout{}, err
	}
	l := Layout{
		State:  filepath.Join(state, "banger"),
		Config: filepath.Join(config, "banger"),
	}
	// BANGER_RUNTIME_DIR is set by the bangerd service (and by tests that
	// isolate a whole installation); the owner's CLI finds the service's
	// directory in the install metadata, which wins over XDG_RUNTIME_DIR
	// so that a login session's /run/user/UID does not hide the service.
	if v := os.Getenv("BANGER_RUNTIME_DIR"); v != "" {
		if !filepath.IsAbs(v) {
			return Layout{}, fmt.Errorf("BANGER_RUNTIME_DIR must be an absolute path, got %q", v)
		}
		l.Runtime, l.RuntimeManaged = v, true
		return l, nil
	}
	uid := os.Getuid()
	if dir := installedRuntimeDir(metadataFile, uid); dir != "" {
		l.Runtime, l.RuntimeManaged = dir, true
		return l, nil
	}
	runtime := os.Getenv("XDG_RUNTIME_DIR")
	if runtime == "" {
		runtime = fmt.Sprintf("/run/user/%d", uid)
		if _, err := os.Stat(runtime); err != nil {
			runtime = fmt.Sprintf("/tmp/banger-%d", uid)
			l.RuntimeParent = runtime
		}
	}
	l.Runtime = filepath.Join(runtime, "banger")
	return l, nil
}

// InstallMetadataFile describes a `banger system install`.
const InstallMetadataFile = "/etc/banger/install.json"

// installedRuntimeDir is the runtime directory of the installed bangerd
// service when uid owns it, else "".
func installedRuntimeDir(file string, uid int) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return ""
	}
	var m struct {
		UID        int    `json:"uid"`
		RuntimeDir string `json:"runtime_dir"`
	}
	if json.Unmarshal(b, &m) != nil || m.UID != uid || !filepath.IsAbs(m.RuntimeDir) {
		return ""
	}
	return m.RuntimeDir
}

// Socket is the daemon's API socket.
func (l Layout) Socket() string { return filepath.Join(l.Runtime, "bangerd.sock") }

// DaemonLog is where a daemon started on demand writes its log.
func (l Layout) DaemonLog() string { return filepath.Join(l.State, "bangerd.log") }

// DaemonPID is the daemon's pid file.
func (l Layout) DaemonPID() string { return filepath.Join(l.Runtime, "bangerd.pid") }

// DB is the SQLite store.
func (l Layout) DB() string { return filepath.Join(l.State, "banger.db") }

// ConfigFile is the user's config.
func (l Layout) ConfigFile() string { return filepath.Join(l.Config, "config.toml") }

// KernelDir holds one imported kernel.
func (l Layout) KernelDir(name string) string { return filepath.Join(l.State, "kernels", name) }

// ImageDir holds one image.
func (l Layout) ImageDir(name string) string { return filepath.Join(l.State, "images", name) }

// VMDir holds one VM's disks and logs.
func (l Layout) VMDir(id string) string { return filepath.Join(l.State, "vms", id) }

// VMRunDir holds one VM's sockets and pid file (short paths: unix sockets
// SnapshotDir is where the snapshot with the given id keeps its files.
func (l Layout) SnapshotDir(id string) string { return filepath.Join(l.State, "snapshots", id) }

// are limited to about 107 bytes).
func (l Layout) VMRunDir(id string) string { return filepath.Join(l.Runtime, "vms", id) }

// SSHKey is banger's default private key (config ssh_key overrides it).
func (l Layout) SSHKey() string { return filepath.Join(l.Config, "ssh", "id_ed25519") }

// SSHConfig is the generated ssh config that ~/.ssh/config includes.
func (l Layout) SSHConfig() string { return filepath.Join(l.Config, "ssh", "config") }

// APIToken is the bearer token that requests on the daemon's TCP
// listener (config api_listen) must carry; the daemon creates it, 0600.
func (l Layout) APIToken() string { return filepath.Join(l.Config, "api-token") }

// KnownHosts is banger's own known_hosts, filled from the guests' host keys.
func (l Layout) KnownHosts() string { return filepath.Join(l.State, "ssh", "known_hosts") }
