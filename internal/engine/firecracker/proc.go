package firecracker

import (
	"path/filepath"
	"strings"

	"banger/internal/engine/vmmproc"
)

// The process handling is shared with the other engine drivers.
type proc = vmmproc.Proc

func openProc(pid int) (*proc, error)         { return vmmproc.Open(pid) }
func procCmdline(pid int) []string            { return vmmproc.Cmdline(pid) }
func readPIDFile(path string) (int, error)    { return vmmproc.ReadPIDFile(path) }
func writePIDFile(path string, pid int) error { return vmmproc.WritePIDFile(path, pid) }

// vmmID identifies a spec's Firecracker among processes, by its command
// line.
type vmmID struct {
	// apiSock is the --api-sock value as the VMM was given it: the host
	// path, or under the jailer the path inside the jail.
	apiSock string
	// id, when set, is the --id value that must be present too. Under the
	// jailer every VMM serves the same in-jail socket path, so the jail
	// id is what tells them apart.
	id string
}

// isVMMFor reports whether argv is the Firecracker that m identifies: the
// binary's file name contains "firecracker" (the jailer runs it as
// /<exec-file name>), the arguments include "--api-sock m.apiSock" (or
// "--api-sock=m.apiSock") and, if m.id is set, "--id m.id". A jailer
// whose own file name contains "firecracker" is told apart by its
// --exec-file. A pid recycled by an unrelated process, or by another VM's
// Firecracker, does not match.
func isVMMFor(argv []string, m vmmID) bool {
	if len(argv) == 0 || !strings.Contains(filepath.Base(argv[0]), "firecracker") {
		return false
	}
	if hasArg(argv, "--exec-file") {
		return false
	}
	if !hasArgValue(argv, "--api-sock", m.apiSock) {
		return false
	}
	return m.id == "" || hasArgValue(argv, "--id", m.id)
}

// hasArg reports whether argv[1:] has the flag name, alone or as
// "name=value".
func hasArg(argv []string, name string) bool {
	for _, a := range argv[1:] {
		if a == name || strings.HasPrefix(a, name+"=") {
			return true
		}
	}
	return false
}

// hasArgValue reports whether argv[1:] has "name value" or "name=value".
func hasArgValue(argv []string, name, value string) bool {
	for i, a := range argv[1:] {
		if a == name+"="+value {
			return true
		}
		if a == name && i+2 < len(argv) && argv[i+2] == value {
			return true
		}
	}
	return false
}

// matcher is isVMMFor bound to m.
func matcher(m vmmID) func(argv []string) bool {
	return func(argv []string) bool { return isVMMFor(argv, m) }
}

// findVMMs lists live processes whose argv is the Firecracker that m
// identifies.
func findVMMs(m vmmID) []int { return vmmproc.Find(matcher(m)) }
