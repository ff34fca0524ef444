package cli

import (
	"strings"
	"testing"
)

// A rollback needs no release channel: under the default config (no
// update_url) it goes as far as looking for the .previous binaries, which
// the test binary's directory does not have. Update and --check still
// need the channel.
func TestUpdateRollbackNeedsNoChannel(t *testing.T) {
	code, _, stderr := run(t, "update", "--rollback")
	if code == 0 || strings.Contains(stderr, "release channel") || !strings.Contains(stderr, "no previous binaries (*.previous) in ") {
		t.Errorf("update --rollback: code %d, stderr %q", code, stderr)
	}
	for _, args := range [][]string{{"update"}, {"update", "--check"}} {
		code, _, stderr := run(t, args...)
		if code == 0 || !strings.Contains(stderr, "no release channel is configured") {
			t.Errorf("%v: code %d, stderr %q", args, code, stderr)
		}
	}
}
