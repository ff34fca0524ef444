package vm

import (
	"crypto/rand"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

var adjectives = []string{"brisk", "calm", "dapper", "eager", "fuzzy", "gentle", "happy", "jolly", "keen", "lucky", "mellow", "nimble", "proud", "quiet", "rapid", "sunny", "tidy", "vivid", "witty", "zesty"}
var nouns = []string{"otter", "falcon", "badger", "heron", "lynx", "marmot", "newt", "ocelot", "panda", "quokka", "raven", "salmon", "tapir", "urchin", "walrus", "yak", "zebra", "beaver", "cobra", "dingo"}

func pick(list []string) string {
	n, _ := rand.Int(rand.Reader, big.NewInt(int64(len(list))))
	return list[n.Int64()]
}

// generateName makes a friendly name for a VM created without one.
func generateName() string {
	var b [2]byte
	rand.Read(b[:])
	return fmt.Sprintf("%s-%s-%02x%02x", pick(adjectives), pick(nouns), b[0], b[1])
}

// ParseSignal accepts "KILL", "SIGKILL", "kill" or "9".
func ParseSignal(s string) (syscall.Signal, error) {
	if s == "" {
		return syscall.SIGKILL, nil
	}
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 || n > 64 {
			return 0, fmt.Errorf("invalid signal number %d", n)
		}
		return syscall.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	sig := unix.SignalNum(name)
	if sig == 0 {
		return 0, fmt.Errorf("unknown signal %q", s)
	}
	return sig, nil
}

func unixSignalName(sig syscall.Signal) string {
	return strings.TrimPrefix(unix.SignalName(sig), "SIG")
}
