package mcpserver

import "fmt"

// boundedBuffer keeps at most max bytes of a stream: its first half and
// its last half, and counts what it dropped in between, so that a command
// printing gigabytes costs max bytes of memory and the agent still sees
// how the output began and how it ended.
type boundedBuffer struct {
	max     int
	head    []byte
	tail    []byte // ring of at most max-len(head) bytes
	tailPos int    // next write position in tail once it is full
	total   int64
}

func newBoundedBuffer(max int) *boundedBuffer {
	if max < 2 {
		max = 2
	}
	return &boundedBuffer{max: max}
}

// Write keeps p's bytes within the bound; it never fails.
func (b *boundedBuffer) Write(p []byte) (int, error) {
	n := len(p)
	b.total += int64(n)
	headMax := b.max / 2
	if len(b.head) < headMax {
		k := min(headMax-len(b.head), len(p))
		b.head = append(b.head, p[:k]...)
		p = p[k:]
	}
	tailMax := b.max - headMax
	for len(p) > 0 {
		if len(b.tail) < tailMax {
			k := min(tailMax-len(b.tail), len(p))
			b.tail = append(b.tail, p[:k]...)
			p = p[k:]
			continue
		}
		if len(p) >= tailMax {
			// Only the last tailMax bytes can survive.
			copy(b.tail, p[len(p)-tailMax:])
			b.tailPos = 0
			p = nil
			continue
		}
		k := copy(b.tail[b.tailPos:], p)
		b.tailPos = (b.tailPos + k) % tailMax
		p = p[k:]
	}
	return n, nil
}

// Truncated reports whether bytes were dropped.
func (b *boundedBuffer) Truncated() bool { return b.total > int64(len(b.head)+len(b.tail)) }

// Total is the number of bytes written.
func (b *boundedBuffer) Total() int64 { return b.total }

// String returns the kept bytes; when some were dropped, a marker line
// between head and tail says how many.
func (b *boundedBuffer) String() string {
	tail := append(append([]byte(nil), b.tail[b.tailPos:]...), b.tail[:b.tailPos]...)
	if !b.Truncated() {
		return string(b.head) + string(tail)
	}
	dropped := b.total - int64(len(b.head)+len(tail))
	return fmt.Sprintf("%s\n[... %d bytes omitted: output truncated to its first and last %d bytes ...]\n%s", b.head, dropped, b.max/2, tail)
}
