package egresslog

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func collect(t *testing.T, path string) []Record {
	t.Helper()
	var out []Record
	if err := Read(path, func(r Record) error { out = append(out, r); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestAppendRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "egress.jsonl")
	if got := collect(t, path); len(got) != 0 {
		t.Fatalf("missing log has %d records", len(got))
	}
	l, err := Open(path, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	want := Record{VM: "dev", Name: "api.test", IP: "192.0.2.1", Port: 443, Proto: "tcp", Verdict: Allow, BytesUp: 10, BytesDown: 20, Secret: true, Secrets: []string{"K"}}
	if err := l.Append(want); err != nil {
		t.Fatal(err)
	}
	l.Append(Record{VM: "dev", Name: "evil.test", Port: 443, Proto: "tcp", Verdict: Deny, Reason: "name not allowed"})
	l.Close()
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("log mode %v", fi.Mode())
	}
	got := collect(t, path)
	if len(got) != 2 || got[0].Name != "api.test" || !got[0].Secret || got[0].BytesDown != 20 || got[0].Time.IsZero() ||
		got[1].Verdict != Deny || got[1].Reason != "name not allowed" {
		t.Fatalf("records: %+v", got)
	}
	if err := l.Append(want); err == nil {
		t.Error("Append after Close succeeded")
	}
}

func TestRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "egress.jsonl")
	max := int64(4 * MaxLine)
	l, err := Open(path, max)
	if err != nil {
		t.Fatal(err)
	}
	n := 3000
	for i := 0; i < n; i++ {
		if err := l.Append(Record{VM: "dev", Name: fmt.Sprintf("h%d.test", i), Proto: "tcp", Verdict: Allow, Reason: strings.Repeat("x", 100)}); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	a, _ := os.Stat(path)
	b, _ := os.Stat(path + ".1")
	if a.Size()+b.Size() > max {
		t.Errorf("log takes %d bytes, cap %d", a.Size()+b.Size(), max)
	}
	got := collect(t, path)
	if len(got) == 0 || got[len(got)-1].Name != fmt.Sprintf("h%d.test", n-1) {
		t.Fatalf("last record lost: %d records", len(got))
	}
	for i := 1; i < len(got); i++ { // contiguous, oldest first, no split lines
		var x, y int
		fmt.Sscanf(got[i-1].Name, "h%d.test", &x)
		fmt.Sscanf(got[i].Name, "h%d.test", &y)
		if y != x+1 {
			t.Fatalf("records %d then %d", x, y)
		}
	}
}

func TestHostileFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "egress.jsonl")
	junk := "not json\n" + strings.Repeat("y", 3*MaxLine) + "\n{\"verdict\":\"allow\",\"name\":\"ok.test\"}\n{}\n{\"verdict\":\"deny\""
	os.WriteFile(path, []byte(junk), 0o600)
	got := collect(t, path)
	if len(got) != 1 || got[0].Name != "ok.test" {
		t.Fatalf("records from a hostile file: %+v", got)
	}
	// A symlink in place of the log is not followed.
	dir := t.TempDir()
	os.Symlink("/etc/passwd", filepath.Join(dir, "l.jsonl"))
	if _, err := Open(filepath.Join(dir, "l.jsonl"), 1<<20); err == nil {
		t.Error("Open followed a symlink")
	}
	// Oversized fields are cut, not refused.
	l, _ := Open(filepath.Join(dir, "big.jsonl"), 1<<20)
	if err := l.Append(Record{Verdict: Deny, Path: strings.Repeat("p", 2*MaxLine)}); err != nil {
		t.Errorf("oversized record: %v", err)
	}
	l.Close()
	if got := collect(t, filepath.Join(dir, "big.jsonl")); len(got) != 1 || len(got[0].Path) != 256 {
		t.Errorf("oversized record read back as %d records", len(got))
	}
	if _, err := Open(path, 10); err == nil {
		t.Error("tiny cap accepted")
	}
}

func TestFollow(t *testing.T) {
	path := filepath.Join(t.TempDir(), "egress.jsonl")
	l, err := Open(path, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.Append(Record{Name: "old.test", Verdict: Allow})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := make(chan string, 10)
	done := make(chan error, 1)
	go func() {
		done <- l.Follow(ctx, func(r Record) error {
			got <- r.Name
			if r.Name == "stop.test" {
				return errors.New("stop")
			}
			return nil
		})
	}()
	if n := <-got; n != "old.test" {
		t.Fatalf("history: %s", n)
	}
	l.Append(Record{Name: "new.test", Verdict: Deny})
	l.Append(Record{Name: "stop.test", Verdict: Deny})
	if n := <-got; n != "new.test" {
		t.Fatalf("live: %s", n)
	}
	<-got
	if err := <-done; err == nil || err.Error() != "stop" {
		t.Fatalf("Follow returned %v", err)
	}
	// Close ends a follower.
	go func() { done <- l.Follow(ctx, func(Record) error { return nil }) }()
	time.Sleep(50 * time.Millisecond)
	l.Close()
	select {
	case err := <-done:
		if err != nil && !strings.Contains(err.Error(), "closed") {
			t.Fatalf("Follow after Close: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("Follow did not end on Close")
	}
}
