package agent

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

// A guest that answers a simple operation with a line that never ends is
// cut off at MaxResponse bytes instead of filling the host's memory.
func TestCallBoundsTheAnswer(t *testing.T) {
	host, guest := net.Pipe()
	srv, err := yamux.Server(guest, muxConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		st, err := srv.Accept()
		if err != nil {
			return
		}
		defer st.Close()
		bufio.NewReader(st).ReadBytes('\n')
		chunk := bytes.Repeat([]byte("x"), 64<<10)
		for i := 0; i < MaxResponse/len(chunk)+2; i++ {
			if _, err := st.Write(chunk); err != nil {
				return
			}
		}
	}()
	c, err := NewClient(host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = c.Call(ctx, Request{Op: OpMeminfo})
	if err == nil || !strings.Contains(err.Error(), "response over") {
		t.Fatalf("endless answer: %v", err)
	}
}
