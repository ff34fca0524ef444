package daemon

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"banger/internal/agent"
)

// A guest that stops reading, or that reads the whole workspace and
// never answers, or a client that stops sending halfway, ends a relayed upload in bounded time with
// agent.ErrIdle (a short idle time injected here).
func TestRelayUploadIdleGuest(t *testing.T) {
	for _, tc := range []struct {
		name  string
		guest func(c net.Conn)
		stall bool // the client stops sending halfway
	}{
		{"stops reading", func(c net.Conn) { io.ReadFull(c, make([]byte, 64<<10)) }, false},
		{"never answers", func(c net.Conn) { io.Copy(io.Discard, c) }, false},
		{"client stalls", func(c net.Conn) { io.Copy(io.Discard, c) }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The client's stream: 4 MiB of stdin frames, then the end.
			cr, cw := io.Pipe()
			go func() {
				fw := agent.NewFrameWriter(cw)
				for i := 0; i < 16; i++ {
					if fw.Write(agent.FrameStdin, make([]byte, 256<<10)) != nil {
						return
					}
					if tc.stall && i == 8 {
						return // and never closes its end
					}
				}
				fw.Write(agent.FrameStdin, nil)
			}()
			host, guest := net.Pipe()
			defer guest.Close()
			go tc.guest(guest)
			errc := make(chan error, 1)
			go func() {
				_, err := relayUpload(cr, host, 200*time.Millisecond)
				errc <- err
			}()
			select {
			case err := <-errc:
				if !errors.Is(err, agent.ErrIdle) {
					t.Fatalf("relay error %v, want agent.ErrIdle", err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("relay still waiting 20s after the guest stalled")
			}
			cr.Close()
		})
	}
}
