package guest

import (
	"context"
	"encoding/json"
	"io"
	"log"
	"math"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"banger/internal/agent"
)

func TestCheckClockBounds(t *testing.T) {
	for _, ns := range []int64{0, -1, math.MinInt64, math.MaxInt64, time.Date(2019, 12, 31, 0, 0, 0, 0, time.UTC).UnixNano()} {
		if _, err := checkClock(ns); err == nil {
			t.Errorf("checkClock(%d) accepted", ns)
		}
	}
	now := time.Now().UnixNano()
	ts, err := checkClock(now)
	if err != nil {
		t.Fatal(err)
	}
	if ts.Nano() != now {
		t.Fatalf("timespec %d, want %d", ts.Nano(), now)
	}
}

// TestSetClockOp: the agent sets a checked time through its hook and
// refuses one out of range without touching the clock.
func TestSetClockOp(t *testing.T) {
	hostEnd, guestEnd := net.Pipe()
	var set []int64
	srv := &Server{Log: log.New(io.Discard, "", 0), SetClock: func(ns int64) error { set = append(set, ns); return nil }}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.ServeConn(ctx, guestEnd)
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	cfg.EnableKeepAlive = false
	sess, err := yamux.Client(hostEnd, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	call := func(ns int64) agent.Response {
		st, err := sess.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		b, _ := json.Marshal(agent.Request{Op: agent.OpSetClock, ClockNS: ns})
		st.Write(append(b, '\n'))
		var resp agent.Response
		json.NewDecoder(st).Decode(&resp)
		return resp
	}
	if r := call(0); r.OK || !strings.Contains(r.Error, "out of range") {
		t.Errorf("set_clock 0: %+v", r)
	}
	now := time.Now().UnixNano()
	if r := call(now); !r.OK {
		t.Errorf("set_clock now: %+v", r)
	}
	if len(set) != 1 || set[0] != now {
		t.Errorf("clock set to %v, want [%d]", set, now)
	}
}
