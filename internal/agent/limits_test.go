package agent

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// A peer that stops reading blocks a writer: IdleConn ends the write in
// bounded time with ErrIdle.
func TestIdleConnPeerStopsReading(t *testing.T) {
	host, guest := net.Pipe()
	defer guest.Close()
	c := IdleConn(host, 100*time.Millisecond)
	defer c.Close()
	errc := make(chan error, 1)
	go func() {
		buf := make([]byte, 64<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				errc <- err
				return
			}
		}
	}()
	// The guest reads a little, then nothing more.
	io.ReadFull(guest, make([]byte, 100<<10))
	select {
	case err := <-errc:
		if !errors.Is(err, ErrIdle) {
			t.Fatalf("write error %v, want ErrIdle", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("write still blocked 10s after the guest stopped reading")
	}
}

// A peer that reads everything but never answers: the read waiting for
// its answer ends with ErrIdle.
func TestIdleConnPeerStopsAnswering(t *testing.T) {
	host, guest := net.Pipe()
	defer guest.Close()
	go io.Copy(io.Discard, guest)
	c := IdleConn(host, 100*time.Millisecond)
	defer c.Close()
	if _, err := c.Write([]byte("all of it")); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		errc <- err
	}()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrIdle) {
			t.Fatalf("read error %v, want ErrIdle", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("read still blocked 10s after the guest went silent")
	}
}

// Progress in one direction keeps the other alive: a read waiting for
// an answer is not cut while the upload it answers still moves.
func TestIdleConnProgressKeepsBothAlive(t *testing.T) {
	host, guest := net.Pipe()
	defer guest.Close()
	c := IdleConn(host, 150*time.Millisecond)
	defer c.Close()
	readc := make(chan error, 1)
	go func() {
		b := make([]byte, 2)
		_, err := io.ReadFull(c, b)
		readc <- err
	}()
	go func() {
		b := make([]byte, 16)
		for i := 0; i < 10; i++ {
			io.ReadFull(guest, b)
		}
		guest.Write([]byte("ok"))
	}()
	// Ten writes, 50 ms apart: 500 ms in all, well past the idle time,
	// but never idle.
	for i := 0; i < 10; i++ {
		time.Sleep(50 * time.Millisecond)
		if _, err := c.Write(make([]byte, 16)); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	if err := <-readc; err != nil {
		t.Fatalf("read with the upload moving: %v", err)
	}
}
