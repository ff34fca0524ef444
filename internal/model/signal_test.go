package model

import (
	"syscall"
	"testing"
)

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]syscall.Signal{"": syscall.SIGKILL, "KILL": syscall.SIGKILL, "sigterm": syscall.SIGTERM, "term": syscall.SIGTERM, "15": syscall.SIGTERM} {
		if got, err := ParseSignal(in); err != nil || got != want {
			t.Errorf("%q: %v %v", in, got, err)
		}
	}
	for _, bad := range []string{"NOPE", "0", "99", "-1"} {
		if _, err := ParseSignal(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
