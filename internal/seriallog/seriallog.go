// Package seriallog keeps a VM's serial console on disk within a fixed
// size. The VMM does not write the log itself: it serves the console on a
// Unix socket (QEMU: a socket chardev in server mode), and the daemon reads
// it (Follow) into a pair of files, PATH and PATH.1, rotating when PATH
// reaches half the cap, so the console never takes more than the cap on
// disk however much a guest writes.
//
// VMs outlive the daemon. While no daemon is connected QEMU drops the
// console's output (a server socket without a client discards writes), so
// the guest is never stalled by a missing reader; a daemon that re-adopts
// the VM reconnects and appends to the same files. While a daemon is
// connected but slow, the socket's buffer fills and the guest's serial
// port waits: a flooding guest slows itself down, not the host.
package seriallog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// Writer appends to a size-capped pair of files.
type Writer struct {
	path string
	half int64 // cap of each file
	mu   sync.Mutex
	f    *os.File
	size int64
}

// OpenWriter opens (or creates) path for appending; path and path.1
// together never exceed max bytes.
func OpenWriter(path string, max int64) (*Writer, error) {
	if max < 2 {
		return nil, fmt.Errorf("serial log cap %d is too small", max)
	}
	w := &Writer{path: path, half: max / 2}
	if err := w.open(); err != nil {
		return nil, err
	}
	// A log left larger than the cap (e.g. by an older banger) is
	// rotated at once.
	if w.size > w.half {
		if err := w.rotate(); err != nil {
			w.f.Close()
			return nil, err
		}
		if fi, err := os.Stat(w.path + ".1"); err == nil && fi.Size() > w.half {
			os.Truncate(w.path+".1", 0)
		}
	}
	return w, nil
}

func (w *Writer) open() error {
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("open serial log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("open serial log: %w", err)
	}
	w.f, w.size = f, fi.Size()
	return nil
}

// rotate moves the current file to path.1 (replacing it) and starts an
// empty one.
func (w *Writer) rotate() error {
	w.f.Close()
	if err := os.Rename(w.path, w.path+".1"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("rotate serial log: %w", err)
	}
	return w.open()
}

// Write appends p, rotating as often as needed.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for len(p) > 0 {
		if w.size >= w.half {
			if err := w.rotate(); err != nil {
				return n, err
			}
		}
		chunk := p
		if room := w.half - w.size; int64(len(chunk)) > room {
			chunk = chunk[:room]
		}
		m, err := w.f.Write(chunk)
		n += m
		w.size += int64(m)
		if err != nil {
			return n, err
		}
		p = p[m:]
	}
	return n, nil
}

// Close closes the current file.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.f.Close()
}

// Follow copies the console served on socketPath into w until ctx ends,
// reconnecting (every retry) while the VMM keeps the socket but drops a
// connection. It returns when ctx is done.
func Follow(ctx context.Context, socketPath string, w io.Writer, retry time.Duration) {
	buf := make([]byte, 32<<10)
	for {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "unix", socketPath)
		if err == nil {
			stop := context.AfterFunc(ctx, func() { conn.Close() })
			io.CopyBuffer(w, conn, buf)
			stop()
			conn.Close()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(retry):
		}
	}
}

// Open returns the whole log, oldest first (path.1, then path), as it is
// at the time of the call: a reader that streams it without holding it in
// memory. A missing log reads as empty.
func Open(path string) (io.ReadCloser, error) {
	var readers []io.Reader
	var files []*os.File
	for _, p := range []string{path + ".1", path} {
		f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			closeAll(files)
			return nil, fmt.Errorf("open serial log: %w", err)
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			closeAll(files)
			return nil, fmt.Errorf("open serial log: %w", err)
		}
		files = append(files, f)
		// What is there now, not what a flooding guest adds meanwhile.
		readers = append(readers, io.LimitReader(f, fi.Size()))
	}
	return &multiCloser{Reader: io.MultiReader(readers...), files: files}, nil
}

type multiCloser struct {
	io.Reader
	files []*os.File
}

func (m *multiCloser) Close() error { closeAll(m.files); return nil }

func closeAll(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// Remove deletes the log files.
func Remove(path string) {
	os.Remove(path)
	os.Remove(path + ".1")
}
