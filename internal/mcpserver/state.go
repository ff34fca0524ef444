package mcpserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// VMs have no labels, so the sandboxes an MCP server creates are marked
// twice: their names start with NamePrefix, and each is recorded (name and
// VM id) in a state file. Cleanup deletes only recorded VMs whose id still
// matches, so a user's own VM that happens to carry the prefix, or a VM
// made later under a recorded name, is never touched.

// NamePrefix starts the name of every sandbox made through MCP.
const NamePrefix = "mcp-"

// maxStateFile bounds the state file read back.
const maxStateFile = 1 << 20

// Record is one sandbox made through MCP.
type Record struct {
	Name      string    `json:"name"`
	ID        string    `json:"id"`
	PID       int       `json:"pid"` // the banger mcp process that made it
	CreatedAt time.Time `json:"created_at"`
}

// State is the file recording the sandboxes made through MCP, shared by
// every banger mcp process of the user (changes hold an flock on it).
type State struct {
	Path string
}

type stateFile struct {
	Sandboxes []Record `json:"sandboxes"`
}

// update runs f on the file's records under an exclusive lock and writes
// back what f returns.
func (s State) update(f func([]Record) []Record) error {
	if err := os.MkdirAll(filepath.Dir(s.Path), 0o700); err != nil {
		return fmt.Errorf("mcp state: %w", err)
	}
	fh, err := os.OpenFile(s.Path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("mcp state: %w", err)
	}
	defer fh.Close()
	if err := syscall.Flock(int(fh.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock mcp state %s: %w", s.Path, err)
	}
	recs, err := readRecords(fh)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(stateFile{Sandboxes: f(recs)}, "", "  ")
	if err != nil {
		return err
	}
	if err := fh.Truncate(0); err != nil {
		return fmt.Errorf("mcp state: %w", err)
	}
	if _, err := fh.WriteAt(append(b, '\n'), 0); err != nil {
		return fmt.Errorf("mcp state: %w", err)
	}
	return nil
}

func readRecords(r io.Reader) ([]Record, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxStateFile+1))
	if err != nil {
		return nil, fmt.Errorf("read mcp state: %w", err)
	}
	if len(b) > maxStateFile {
		return nil, errors.New("mcp state file is over 1 MiB: refusing it")
	}
	if len(b) == 0 {
		return nil, nil
	}
	var sf stateFile
	if err := json.Unmarshal(b, &sf); err != nil {
		return nil, fmt.Errorf("mcp state file is corrupt: %w", err)
	}
	return sf.Sandboxes, nil
}

// Add records r.
func (s State) Add(r Record) error {
	return s.update(func(recs []Record) []Record { return append(recs, r) })
}

// Remove forgets the record of the VM with id.
func (s State) Remove(id string) error {
	return s.update(func(recs []Record) []Record {
		out := recs[:0]
		for _, r := range recs {
			if r.ID != id {
				out = append(out, r)
			}
		}
		return out
	})
}

// List returns the records.
func (s State) List() ([]Record, error) {
	fh, err := os.Open(s.Path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("mcp state: %w", err)
	}
	defer fh.Close()
	if err := syscall.Flock(int(fh.Fd()), syscall.LOCK_SH); err != nil {
		return nil, fmt.Errorf("lock mcp state %s: %w", s.Path, err)
	}
	return readRecords(fh)
}
