package mcpserver

import (
	"bytes"
	"strings"
	"testing"
)

func TestBoundedBufferKeepsAll(t *testing.T) {
	b := newBoundedBuffer(100)
	b.Write([]byte("hello "))
	b.Write([]byte("world"))
	if b.Truncated() || b.String() != "hello world" || b.Total() != 11 {
		t.Fatalf("got %q truncated=%v total=%d", b.String(), b.Truncated(), b.Total())
	}
}

// TestBoundedBufferTruncates: a stream far over the bound keeps its first
// and last halves, says how much it dropped, and never holds more.
func TestBoundedBufferTruncates(t *testing.T) {
	for _, chunk := range []int{1, 7, 50, 1000, 100000} {
		b := newBoundedBuffer(100)
		var all bytes.Buffer
		for i := 0; all.Len() < 250000; i++ {
			p := bytes.Repeat([]byte{byte('a' + i%26)}, chunk)
			all.Write(p)
			b.Write(p)
		}
		if !b.Truncated() {
			t.Fatalf("chunk %d: not truncated", chunk)
		}
		if len(b.head)+len(b.tail) > 100 {
			t.Fatalf("chunk %d: kept %d bytes", chunk, len(b.head)+len(b.tail))
		}
		s := b.String()
		want := all.Bytes()
		if !strings.HasPrefix(s, string(want[:50])) {
			t.Errorf("chunk %d: head %q", chunk, s[:50])
		}
		if !strings.HasSuffix(s, string(want[len(want)-50:])) {
			t.Errorf("chunk %d: tail %q, want %q", chunk, s[len(s)-50:], want[len(want)-50:])
		}
		if !strings.Contains(s, "bytes omitted") || !strings.Contains(s, "truncated") {
			t.Errorf("chunk %d: no truncation marker in %q", chunk, s)
		}
		if b.Total() != int64(all.Len()) {
			t.Errorf("chunk %d: total %d, want %d", chunk, b.Total(), all.Len())
		}
	}
}
