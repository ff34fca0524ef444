// Package egresslog records every egress attempt of a VM: one JSON object
// per line (JSONL) in a per-VM file pair PATH and PATH.1, rotated as
// internal/seriallog does (PATH moves to PATH.1 when it would pass half
// the cap), so the log never takes more than the cap on disk. Rotation
// happens between records: a line is never split across the two files.
//
// Read gives the history oldest first; Follow gives the history and then
// every new record as it is written, for `banger vm egress NAME --follow`.
package egresslog

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"
)

// Verdicts.
const (
	Allow = "allow"
	Deny  = "deny"
)

// Record is one connection attempt (or one HTTP request on a connection
// the proxy reads).
type Record struct {
	Time      time.Time `json:"time"`
	VM        string    `json:"vm"`
	Name      string    `json:"name,omitempty"` // SNI, Host or CONNECT authority
	IP        string    `json:"ip,omitempty"`   // destination address
	Port      uint16    `json:"port,omitempty"`
	Proto     string    `json:"proto"`          // tcp, udp, dns
	Via       string    `json:"via,omitempty"`  // transparent, connect, http-proxy, dns, firewall
	Kind      string    `json:"kind,omitempty"` // tls-passthrough, tls-intercept, http, tcp
	Method    string    `json:"method,omitempty"`
	Path      string    `json:"path,omitempty"`
	Status    int       `json:"status,omitempty"` // upstream HTTP status
	Verdict   string    `json:"verdict"`          // allow or deny
	Reason    string    `json:"reason,omitempty"`
	BytesUp   int64     `json:"bytes_up"`
	BytesDown int64     `json:"bytes_down"`
	Secret    bool      `json:"secret"`            // a secret was substituted
	Secrets   []string  `json:"secrets,omitempty"` // which (names, never values)
	Duration  float64   `json:"duration_s,omitempty"`
}

// MaxLine caps one record line; longer lines are skipped by readers.
const MaxLine = 64 << 10

// Log appends records to a capped file pair and fans them out to
// followers.
type Log struct {
	path string
	half int64

	mu   sync.Mutex
	f    *os.File
	size int64
	subs map[chan Record]struct{}
	// Dropped counts records a follower was too slow to take.
	dropped int64
}

// Open opens (or creates) the log at path; path and path.1 together stay
// under max bytes.
func Open(path string, max int64) (*Log, error) {
	if max < 2*MaxLine {
		return nil, fmt.Errorf("egress log cap %d is too small (at least %d)", max, 2*MaxLine)
	}
	l := &Log{path: path, half: max / 2, subs: map[chan Record]struct{}{}}
	if err := l.open(); err != nil {
		return nil, err
	}
	if l.size > l.half {
		if err := l.rotate(); err != nil {
			l.f.Close()
			return nil, err
		}
	}
	return l, nil
}

func (l *Log) open() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("open egress log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("open egress log: %w", err)
	}
	l.f, l.size = f, fi.Size()
	return nil
}

func (l *Log) rotate() error {
	l.f.Close()
	if err := os.Rename(l.path, l.path+".1"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("rotate egress log: %w", err)
	}
	return l.open()
}

// Append writes r (its Time set to now when zero) and hands it to every
// follower. A follower that does not keep up loses records rather than
// slowing the proxy.
func (l *Log) Append(r Record) error {
	if r.Time.IsZero() {
		r.Time = time.Now()
	}
	r.Time = r.Time.UTC()
	line, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("egress log: %w", err)
	}
	if len(line) >= MaxLine {
		r.Path = r.Path[:min(len(r.Path), 256)]
		r.Name = r.Name[:min(len(r.Name), 256)]
		r.Reason = r.Reason[:min(len(r.Reason), 256)]
		if line, err = json.Marshal(r); err != nil || len(line) >= MaxLine {
			return fmt.Errorf("egress log: record too large")
		}
	}
	line = append(line, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return errors.New("egress log: closed")
	}
	if l.size+int64(len(line)) > l.half {
		if err := l.rotate(); err != nil {
			return err
		}
	}
	n, err := l.f.Write(line)
	l.size += int64(n)
	if err != nil {
		return fmt.Errorf("egress log: %w", err)
	}
	for ch := range l.subs {
		select {
		case ch <- r:
		default:
			l.dropped++
		}
	}
	return nil
}

// Dropped is the number of records followers missed.
func (l *Log) Dropped() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dropped
}

// Close closes the file and ends every Follow.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for ch := range l.subs {
		close(ch)
		delete(l.subs, ch)
	}
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// Follow calls fn with every record in the log, oldest first, then with
// each new record as it is appended, until ctx ends, the log is closed
// (nil) or fn fails (its error). No record is given twice or skipped
// between the history and the live part (unless the follower falls more
// than 1024 records behind; see Dropped).
func (l *Log) Follow(ctx context.Context, fn func(Record) error) error {
	ch := make(chan Record, 1024)
	l.mu.Lock()
	if l.f == nil {
		l.mu.Unlock()
		return errors.New("egress log: closed")
	}
	hist, err := openSnapshot(l.path)
	if err != nil {
		l.mu.Unlock()
		return err
	}
	l.subs[ch] = struct{}{}
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		if _, ok := l.subs[ch]; ok {
			delete(l.subs, ch)
		}
		l.mu.Unlock()
	}()
	err = decode(hist, fn)
	hist.Close()
	if err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case r, ok := <-ch:
			if !ok {
				return nil
			}
			if err := fn(r); err != nil {
				return err
			}
		}
	}
}

// Read calls fn for every record of the log at path, oldest first, as it
// is at the time of the call. Lines that are not records (a crash
// mid-write, a hostile edit) are skipped. A missing log has no records.
func Read(path string, fn func(Record) error) error {
	r, err := openSnapshot(path)
	if err != nil {
		return err
	}
	defer r.Close()
	return decode(r, fn)
}

func decode(r io.Reader, fn func(Record) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := readLine(br)
		if len(line) > 0 {
			var rec Record
			if json.Unmarshal(line, &rec) == nil && rec.Verdict != "" {
				if ferr := fn(rec); ferr != nil {
					return ferr
				}
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read egress log: %w", err)
		}
	}
}

// readLine returns the next line without its newline; a line longer than
// MaxLine is consumed and returned empty.
func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	tooLong := false
	for {
		chunk, err := br.ReadSlice('\n')
		if !tooLong {
			if len(line)+len(chunk) > MaxLine {
				tooLong, line = true, nil
			} else {
				line = append(line, chunk...)
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if tooLong {
			line = nil
		}
		if len(line) > 0 && line[len(line)-1] == '\n' {
			line = line[:len(line)-1]
		}
		return line, err
	}
}

type multiCloser struct {
	io.Reader
	files []*os.File
}

func (m *multiCloser) Close() error {
	for _, f := range m.files {
		f.Close()
	}
	return nil
}

// openSnapshot returns path.1 then path, each cut at its size now.
func openSnapshot(path string) (io.ReadCloser, error) {
	mc := &multiCloser{}
	var readers []io.Reader
	for _, p := range []string{path + ".1", path} {
		f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			mc.Close()
			return nil, fmt.Errorf("open egress log: %w", err)
		}
		mc.files = append(mc.files, f)
		fi, err := f.Stat()
		if err != nil {
			mc.Close()
			return nil, fmt.Errorf("open egress log: %w", err)
		}
		readers = append(readers, io.LimitReader(f, fi.Size()))
	}
	mc.Reader = io.MultiReader(readers...)
	return mc, nil
}

// Remove deletes the log files.
func Remove(path string) {
	os.Remove(path)
	os.Remove(path + ".1")
}
