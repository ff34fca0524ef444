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
)

// versionTimeout bounds "firecracker --version".
const versionTimeout = 10 * time.Second

var versionRE = regexp.MustCompile(`(?m)^Firecracker v(\d+\.\d+\.\d+\S*)`)

// Version runs "binary --version" and returns Firecracker's version, e.g.
// "1.12.0".
func Version(ctx context.Context, binary string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, versionTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, "--version").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w: %s", binary, err, strings.TrimSpace(string(out)))
	}
	return parseVersion(string(out))
}

func parseVersion(out string) (string, error) {
	m := versionRE.FindStringSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("unexpected version output %.80q", strings.TrimSpace(out))
	}
	return m[1], nil
}

// Check reports whether this driver can start VMs on this host, for
// "doctor": it returns the binary's resolved path and version, or an error
// listing every reason it cannot (binary missing or not answering, jailer
// configured, /dev/kvm missing or not read-write). It boots nothing: whether
// this host's KVM can actually run a guest is the KVM probe's question.
func (d *Driver) Check(ctx context.Context) (path, version string, err error) {
	var errs []error
	path, lerr := exec.LookPath(d.binary())
	if lerr != nil {
		errs = append(errs, fmt.Errorf("firecracker binary: %w", lerr))
	} else if version, lerr = Version(ctx, path); lerr != nil {
		errs = append(errs, lerr)
	}
	if d.Jailer != "" {
		errs = append(errs, fmt.Errorf("jailer %s configured, but running under the jailer is not supported yet", d.Jailer))
	}
	if f, kerr := os.OpenFile("/dev/kvm", os.O_RDWR, 0); kerr != nil {
		errs = append(errs, fmt.Errorf("firecracker needs kvm: %w", kerr))
	} else {
		f.Close()
	}
	return path, version, errors.Join(errs...)
}
