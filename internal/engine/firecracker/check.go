package firecracker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"time"

	"banger/internal/engine"
	"banger/internal/hosttools"
)

// versionTimeout bounds "firecracker --version".
const versionTimeout = 10 * time.Second

var (
	versionRE       = regexp.MustCompile(`(?m)^Firecracker v(\d+\.\d+\.\d+\S*)`)
	jailerVersionRE = regexp.MustCompile(`(?m)^Jailer v(\d+\.\d+\.\d+\S*)`)
)

// Version runs "binary --version" and returns Firecracker's version, e.g.
// "1.12.0".
func Version(ctx context.Context, binary string) (string, error) {
	return runVersion(ctx, binary, versionRE)
}

// JailerVersion runs "jailer --version" and returns the jailer's version,
// which should be Firecracker's.
func JailerVersion(ctx context.Context, jailer string) (string, error) {
	return runVersion(ctx, jailer, jailerVersionRE)
}

func runVersion(ctx context.Context, binary string, re *regexp.Regexp) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, versionTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, "--version").CombinedOutput()
	if err != nil {
		return "", hosttools.OutputError(binary+" --version", err, out)
	}
	return matchVersion(re, string(out))
}

func parseVersion(out string) (string, error) { return matchVersion(versionRE, out) }

func matchVersion(re *regexp.Regexp, out string) (string, error) {
	m := re.FindStringSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("unexpected version output %.80q", strings.TrimSpace(out))
	}
	return m[1], nil
}

// Check reports whether this driver can start VMs on this host, for
// "doctor": it returns the binary's resolved path and version, or an error
// listing every reason it cannot (binary missing or not answering,
// /dev/kvm missing or not read-write; with a jailer: the jailer missing,
// not answering or of another version than Firecracker (the jailer docs
// require the same), a bad jail configuration, a daemon that is not
// root). It boots nothing: whether this host's KVM can actually run a
// guest is the KVM probe's question.
func (d *Driver) Check(ctx context.Context) (path, version string, err error) {
	var errs []error
	path, lerr := hosttools.Path(d.binary())
	if lerr != nil {
		errs = append(errs, fmt.Errorf("firecracker binary: %w", lerr))
	} else if version, lerr = Version(ctx, path); lerr != nil {
		errs = append(errs, lerr)
	}
	if d.Jailer != "" {
		errs = append(errs, d.checkJailer(ctx, version)...)
	}
	if f, kerr := os.OpenFile("/dev/kvm", os.O_RDWR, 0); kerr != nil {
		errs = append(errs, fmt.Errorf("firecracker needs kvm: %w", kerr))
	} else {
		f.Close()
	}
	return path, version, errors.Join(errs...)
}

// checkJailer lists what keeps the jailer from running VMs; fcVersion is
// Firecracker's version ("" if unknown).
func (d *Driver) checkJailer(ctx context.Context, fcVersion string) []error {
	var errs []error
	if jpath, err := hosttools.Path(d.Jailer); err != nil {
		errs = append(errs, fmt.Errorf("jailer binary: %w", err))
	} else if jv, err := JailerVersion(ctx, jpath); err != nil {
		errs = append(errs, err)
	} else if fcVersion != "" && jv != fcVersion {
		errs = append(errs, fmt.Errorf("jailer %s is version %s but firecracker is %s: use the jailer of the same release", jpath, jv, fcVersion))
	}
	if j, err := d.jailDir(engine.Spec{ID: "check"}); err != nil {
		errs = append(errs, err)
	} else if j.execErr == nil {
		// A missing firecracker binary is reported by Check.
		if err := d.checkExecName(j); err != nil {
			errs = append(errs, err)
		}
	}
	if err := d.checkJailIDs(); err != nil {
		errs = append(errs, err)
	}
	if os.Geteuid() != 0 {
		errs = append(errs, errors.New("the jailer needs root (it chroots, creates device nodes and switches to the jail user), and the daemon does not run as root"))
	}
	return errs
}
