package vm

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"banger/internal/agent"
)

// A guest that stops reading mid-upload, or reads everything and never
// answers, fails an upload in bounded time (a short idle time injected
// here), with agent.ErrIdle; a well-behaved guest's answer is returned.
func TestUploadTarIdleGuest(t *testing.T) {
	payload := func(w io.Writer) error {
		// 4 MiB: more than a net.Pipe peer that stopped reading takes.
		_, err := w.Write(make([]byte, 4<<20))
		return err
	}
	for _, tc := range []struct {
		name  string
		guest func(c net.Conn)
	}{
		{"stops reading", func(c net.Conn) {
			io.ReadFull(c, make([]byte, 64<<10))
			// then nothing: the host's writes block
		}},
		{"never answers", func(c net.Conn) {
			for {
				typ, p, err := agent.ReadFrame(c)
				if err != nil || (typ == agent.FrameStdin && len(p) == 0) {
					return // all read; no exit frame comes
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host, guest := net.Pipe()
			defer guest.Close()
			go tc.guest(guest)
			errc := make(chan error, 1)
			go func() { errc <- uploadTar(context.Background(), host, 200*time.Millisecond, payload) }()
			select {
			case err := <-errc:
				if !errors.Is(err, agent.ErrIdle) {
					t.Fatalf("upload error %v, want agent.ErrIdle", err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("upload still waiting 20s after the guest stalled")
			}
		})
	}
	t.Run("answers", func(t *testing.T) {
		host, guest := net.Pipe()
		defer guest.Close()
		go func() {
			for {
				typ, p, err := agent.ReadFrame(guest)
				if err != nil {
					return
				}
				if typ == agent.FrameStdin && len(p) == 0 {
					agent.NewFrameWriter(guest).WriteJSON(agent.FrameExit, agent.ExitStatus{Code: 1, Error: "disk full"})
					return
				}
			}
		}()
		err := uploadTar(context.Background(), host, 5*time.Second, payload)
		if err == nil || !strings.Contains(err.Error(), "disk full") {
			t.Fatalf("upload error %v, want the guest's", err)
		}
	})
}

// The caller's context ends an upload too.
func TestUploadTarContext(t *testing.T) {
	host, guest := net.Pipe()
	defer guest.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := uploadTar(ctx, host, time.Hour, func(w io.Writer) error {
		_, err := w.Write(make([]byte, 1<<20))
		return err
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("upload error %v, want the context's", err)
	}
}
