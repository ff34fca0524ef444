package vm

import (
	"crypto/rand"
	"fmt"
	"math/big"
	"strings"
	"syscall"
	"unicode"
	"unicode/utf8"

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

func unixSignalName(sig syscall.Signal) string {
	return strings.TrimPrefix(unix.SignalName(sig), "SIG")
}

// printable makes guest-written text fit for an error message that ends
// up on the user's terminal: control characters other than newline and tab
// (escape sequences, carriage returns, bells) and invalid UTF-8 are shown
// as \xNN instead of being sent to the terminal.
func printable(b []byte) string {
	var sb strings.Builder
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		switch {
		case r == utf8.RuneError && size <= 1,
			r != '\n' && r != '\t' && unicode.IsControl(r):
			for _, c := range b[:max(size, 1)] {
				fmt.Fprintf(&sb, `\x%02x`, c)
			}
		default:
			sb.Write(b[:size])
		}
		b = b[max(size, 1):]
	}
	return sb.String()
}
