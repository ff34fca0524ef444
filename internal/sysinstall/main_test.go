package sysinstall

import (
	"testing"

	"banger/internal/testenv"
)

// TestMain runs the tests with no BANGER_* variable set and HOME and the
// XDG directories in a temporary directory, whatever the caller's
// environment: tests that need a variable set it themselves (t.Setenv).
func TestMain(m *testing.M) { testenv.Main(m) }
