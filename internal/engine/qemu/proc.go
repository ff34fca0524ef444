package qemu

import (
	"path/filepath"
	"strings"

	"banger/internal/engine/vmmproc"
)

// The process handling is shared with the other engine drivers.
type proc = vmmproc.Proc

func openProc(pid int) (*proc, error)      { return vmmproc.Open(pid) }
func procCmdline(pid int) []string         { return vmmproc.Cmdline(pid) }
func readPIDFile(path string) (int, error) { return vmmproc.ReadPIDFile(path) }

// isVMMFor reports whether argv is a QEMU serving spec's QMP socket: the
// binary's name mentions qemu and an argument names the socket path (as
// "path=SOCK" in a chardev, or "unix:SOCK" in -qmp). A pid recycled by an
// unrelated process, or by another VM's QEMU, does not match.
func isVMMFor(argv []string, qmpSocket string) bool {
	if len(argv) == 0 || !strings.Contains(filepath.Base(argv[0]), "qemu") {
		return false
	}
	esc := escape(qmpSocket)
	for _, a := range argv {
		for _, key := range []string{"path=", "unix:"} {
			for rest := a; ; {
				i := strings.Index(rest, key+esc)
				if i < 0 {
					break
				}
				// A QEMU option value ends at a comma that is not
				// doubled, or at the end of the argument.
				tail := rest[i+len(key)+len(esc):]
				if tail == "" || (tail[0] == ',' && !strings.HasPrefix(tail, ",,")) {
					if i == 0 || rest[i-1] == ',' {
						return true
					}
				}
				rest = rest[i+1:]
			}
		}
	}
	return false
}

// matcher is isVMMFor bound to a QMP socket.
func matcher(qmpSocket string) func(argv []string) bool {
	return func(argv []string) bool { return isVMMFor(argv, qmpSocket) }
}

// findVMMs lists live processes whose argv is a QEMU serving qmpSocket.
func findVMMs(qmpSocket string) []int { return vmmproc.Find(matcher(qmpSocket)) }
