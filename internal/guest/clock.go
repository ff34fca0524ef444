package guest

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// Bounds on a clock the host may set: a value outside them is a host bug
// (or a hostile host), not a time to jump to.
var (
	minClock = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	maxClock = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
)

// checkClock refuses a time outside [minClock, maxClock).
func checkClock(ns int64) (unix.Timespec, error) {
	t := time.Unix(0, ns)
	if t.Before(minClock) || !t.Before(maxClock) {
		return unix.Timespec{}, fmt.Errorf("time %d ns is out of range", ns)
	}
	return unix.NsecToTimespec(ns), nil
}

// setClock sets the guest's wall clock to ns nanoseconds since the epoch.
func (s *Server) setClock(ns int64) error {
	ts, err := checkClock(ns)
	if err != nil {
		return err
	}
	if s.SetClock != nil {
		return s.SetClock(ns)
	}
	return unix.ClockSettime(unix.CLOCK_REALTIME, &ts)
}
