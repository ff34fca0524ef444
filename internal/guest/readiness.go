package guest

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"banger/internal/agent"
)

// checkReadiness reports how far the guest has booted: whether something
// listens on TCP port 22, whether the image has an SSH server, and
// whether the init system has finished its boot (asked through sys).
func checkReadiness(ctx context.Context, sys *systemCache) agent.Readiness {
	r := agent.Readiness{SSH: listensTCP("/proc", 22), SSHD: hasSSHD("/")}
	r.System, r.SystemState = sys.get(ctx, pid1())
	return r
}

// systemAskEvery bounds how often systemd is asked: each question is a
// process in a guest that may still be booting (slowly, under emulation),
// and several waiters may be asking at once.
const systemAskEvery = 2 * time.Second

// systemCache remembers systemd's last answer for systemAskEvery. The
// zero value is ready to use.
type systemCache struct {
	mu     sync.Mutex
	at     time.Time
	booted bool
	state  string
}

func (c *systemCache) get(ctx context.Context, comm string) (bool, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && time.Since(c.at) < systemAskEvery {
		return c.booted, c.state
	}
	c.booted, c.state = systemState(ctx, comm)
	c.at = time.Now()
	return c.booted, c.state
}

// listensTCP reports whether a TCP socket (IPv4 or IPv6) listens on port
// in the network namespace of the procfs at proc.
func listensTCP(proc string, port uint16) bool {
	for _, f := range []string{"net/tcp", "net/tcp6"} {
		data, err := readProcFile(filepath.Join(proc, f))
		if err != nil {
			continue
		}
		for _, s := range parseProcNet(data, binary.NativeEndian) {
			if s.State == tcpListen && s.Port == port {
				return true
			}
		}
	}
	return false
}

// readProcFile reads a procfs table, bounded (a guest with a million
// sockets is not worth reading to the end).
func readProcFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, 16<<20))
}

// sshServers are where images keep an SSH server: OpenSSH's, or dropbear.
var sshServers = append([]string{"/usr/sbin/dropbear", "/usr/bin/dropbear", "/sbin/dropbear"}, sshdPaths...)

// hasSSHD reports whether the guest under root has an SSH server.
func hasSSHD(root string) bool {
	for _, p := range sshServers {
		if fi, err := os.Stat(filepath.Join(root, p)); err == nil && fi.Mode().IsRegular() {
			return true
		}
	}
	return false
}

// systemState says whether the init system (whose PID 1 is called comm)
// has finished booting, with its own word for the state. systemd is asked
// with `systemctl is-system-running` (a fixed command line; its answer is
// one word, read bounded); the agent as PID 1 is booted by definition;
// another init cannot be asked, so it counts as booted once the agent
// answers.
func systemState(ctx context.Context, comm string) (bool, string) {
	switch comm {
	case "systemd":
	case "banger-agent":
		return true, "agent"
	default:
		return true, comm
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "systemctl", "is-system-running")
	cmd.Env = defaultEnv
	var out bytes.Buffer
	cmd.Stdout = &limitedWriter{w: &out, n: 256}
	cmd.Run() // exits non-zero in every state but running
	state := strings.TrimSpace(out.String())
	if state == "" {
		state = "unknown"
	}
	return systemBooted(state), state
}

// systemBooted reports whether systemd's state means the boot is over.
// degraded counts: the boot finished with a unit failed.
func systemBooted(state string) bool {
	return state == "running" || state == "degraded"
}

// limitedWriter keeps the first n bytes written and drops the rest.
type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		k := min(len(p), l.n)
		l.w.Write(p[:k])
		l.n -= k
	}
	return len(p), nil
}
