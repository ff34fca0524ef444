// Package store keeps bangerd's persistent state (VMs, kernels, images) in a
// SQLite database.
//
// The database is opened in WAL mode with a busy timeout and foreign keys
// enforced, so that any number of goroutines may share one *Store (and other
// processes may read the file) without "database is locked" errors. The
// schema is defined by numbered SQL files embedded from migrations/; Open
// applies the pending ones, each in its own transaction, and refuses a
// database whose recorded migrations do not match the binary's.
//
// Times are stored as UTC text, RFC 3339 with exactly nine fractional digits,
// so that text order is time order; they are returned as UTC time.Time
// values, and an unset (zero) time round-trips as the zero time.
//
// Lookups that find nothing return errors wrapping ErrNotFound; inserts that
// collide with an existing key return errors wrapping ErrExists.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Sentinel errors; test with errors.Is.
var (
	// ErrNotFound means the requested record does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists means a record with the same key (name or ID) already exists.
	ErrExists = errors.New("already exists")
)

// busyTimeout is how long a connection waits for another writer before
// giving up with SQLITE_BUSY.
const busyTimeout = 10 * time.Second

// Store is a handle on banger's state database. It is safe for concurrent
// use by multiple goroutines.
type Store struct {
	db  *sql.DB
	now func() time.Time
}

// Open opens the database at path, creating its parent directory (mode 0700)
// and the file (mode 0600) if needed, and applies any pending migrations.
// It fails if the database records migrations this binary does not have or
// whose content differs from the embedded ones.
func Open(ctx context.Context, path string) (*Store, error) {
	migs, err := embeddedMigrations()
	if err != nil {
		return nil, err
	}
	return openWith(ctx, path, migs)
}

// openWith is Open with an explicit migration set.
func openWith(ctx context.Context, path string, migs []migration) (*Store, error) {
	if path == "" {
		return nil, errors.New("open store: empty path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("open store: create directory: %w", err)
	}
	// Create the file ourselves so it gets mode 0600; SQLite gives the -wal
	// and -shm files the same mode as the database.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}

	db, err := sql.Open("sqlite", fileDSN(abs, url.Values{
		"_pragma": {
			"busy_timeout(" + strconv.FormatInt(busyTimeout.Milliseconds(), 10) + ")",
			"foreign_keys(1)",
		},
		// Write transactions take the write lock up front, so they wait on
		// busy_timeout instead of failing when upgrading a read lock.
		"_txlock": {"immediate"},
	}))
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", abs, err)
	}
	s := &Store{db: db, now: time.Now}
	if err := s.setup(ctx, migs); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open store %s: %w", abs, err)
	}
	return s, nil
}

// setup switches the database to WAL mode and migrates it.
func (s *Store) setup(ctx context.Context, migs []migration) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()

	var mode string
	if err := conn.QueryRowContext(ctx, "PRAGMA journal_mode = WAL").Scan(&mode); err != nil {
		return fmt.Errorf("enable wal: %w", err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("enable wal: journal mode is %q", mode)
	}
	return migrate(ctx, conn, migs)
}

// Close closes the database. Calls in flight may fail.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

// fileDSN builds a driver DSN for the absolute path abs as a SQLite URI, so
// that any byte in the path (including '?' and '#') is passed through.
func fileDSN(abs string, params url.Values) string {
	u := url.URL{Path: filepath.ToSlash(abs)}
	return "file:" + u.EscapedPath() + "?" + params.Encode()
}

// isUniqueViolation reports whether err is a PRIMARY KEY or UNIQUE
// constraint failure.
func isUniqueViolation(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() {
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return true
	}
	return false
}

// timeLayout is RFC 3339 with a fixed-width fraction, so that for UTC
// values text order equals time order.
const timeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// formatTime encodes t as UTC text. Years outside 0001-9999 are rejected
// because they would break the fixed width and RFC 3339.
func formatTime(t time.Time) (string, error) {
	t = t.UTC()
	if y := t.Year(); y < 1 || y > 9999 {
		return "", fmt.Errorf("time %s out of range", t)
	}
	return t.Format(timeLayout), nil
}

// formatOptionalTime encodes t, or NULL if t is zero.
func formatOptionalTime(t time.Time) (sql.NullString, error) {
	if t.IsZero() {
		return sql.NullString{}, nil
	}
	s, err := formatTime(t)
	if err != nil {
		return sql.NullString{}, err
	}
	return sql.NullString{String: s, Valid: true}, nil
}

// parseTime decodes a value written by formatTime.
func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("parse stored time: %w", err)
	}
	return t.UTC(), nil
}

// parseOptionalTime decodes a nullable time; NULL is the zero time.
func parseOptionalTime(s sql.NullString) (time.Time, error) {
	if !s.Valid {
		return time.Time{}, nil
	}
	return parseTime(s.String)
}

// stamp returns the current time in UTC without a monotonic reading.
func (s *Store) stamp() time.Time {
	return s.now().UTC().Round(0)
}

// scanner is implemented by *sql.Row and *sql.Rows.
type scanner interface {
	Scan(dest ...any) error
}
