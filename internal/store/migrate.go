package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"time"
)

// migrationFiles holds the schema migrations. A migration is a file named
// NNNN_name.sql (four-digit version from 0001, lowercase name); numbering
// must be contiguous and a released file must never change, because its
// sha256 is recorded in the database when applied.
//
// Each migration runs in its own transaction with foreign-key enforcement
// off (so a table can be rebuilt with the usual create-copy-drop-rename
// procedure without cascading deletes); PRAGMA foreign_key_check must come
// back clean before it commits. A migration must not contain BEGIN, COMMIT
// or PRAGMA foreign_keys.
//
//go:embed migrations
var migrationFiles embed.FS

// migrationsTable records applied migrations. It is created outside the
// numbered migrations because recording migration 1 needs it.
const migrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER NOT NULL PRIMARY KEY CHECK (version > 0),
    name       TEXT    NOT NULL,
    checksum   TEXT    NOT NULL,
    applied_at TEXT    NOT NULL
) STRICT`

// migration is one numbered schema change.
type migration struct {
	version  int
	name     string // without the number and the .sql suffix
	file     string
	sql      string
	checksum string // hex sha256 of the file
}

func (m migration) String() string { return m.file }

// appliedMigration is a row of schema_migrations.
type appliedMigration struct {
	version  int
	name     string
	checksum string
}

var migrationName = regexp.MustCompile(`^([0-9]{4})_([a-z0-9][a-z0-9_]*)\.sql$`)

// embeddedMigrations returns the migrations compiled into the binary.
func embeddedMigrations() ([]migration, error) {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return nil, fmt.Errorf("embedded migrations: %w", err)
	}
	return loadMigrations(sub)
}

// loadMigrations reads and validates the migrations at the root of fsys:
// every entry must be a NNNN_name.sql file, versions must run 1, 2, 3, ...
// without gaps or duplicates.
func loadMigrations(fsys fs.FS) ([]migration, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	byVersion := make(map[int]string)
	var migs []migration
	for _, e := range entries {
		m := migrationName.FindStringSubmatch(e.Name())
		if m == nil || !e.Type().IsRegular() {
			return nil, fmt.Errorf("migration %q: name must match NNNN_name.sql", e.Name())
		}
		version, _ := strconv.Atoi(m[1]) // four digits: cannot fail
		if prev, ok := byVersion[version]; ok {
			return nil, fmt.Errorf("migration %04d defined twice: %s and %s", version, prev, e.Name())
		}
		byVersion[version] = e.Name()
		data, err := fs.ReadFile(fsys, e.Name())
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		sum := sha256.Sum256(data)
		migs = append(migs, migration{
			version:  version,
			name:     m[2],
			file:     e.Name(),
			sql:      string(data),
			checksum: hex.EncodeToString(sum[:]),
		})
	}
	if len(migs) == 0 {
		return nil, errors.New("no migrations")
	}
	sort.Slice(migs, func(i, j int) bool { return migs[i].version < migs[j].version })
	for i, m := range migs {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %s: expected version %04d (numbering must be contiguous from 0001)", m.file, i+1)
		}
	}
	return migs, nil
}

// queryer is implemented by *sql.Conn and *sql.Tx.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// readApplied returns the rows of schema_migrations in version order.
func readApplied(ctx context.Context, q queryer) ([]appliedMigration, error) {
	rows, err := q.QueryContext(ctx, "SELECT version, name, checksum FROM schema_migrations ORDER BY version")
	if err != nil {
		return nil, fmt.Errorf("read applied migrations: %w", err)
	}
	defer rows.Close()
	var applied []appliedMigration
	for rows.Next() {
		var a appliedMigration
		if err := rows.Scan(&a.version, &a.name, &a.checksum); err != nil {
			return nil, fmt.Errorf("read applied migrations: %w", err)
		}
		applied = append(applied, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read applied migrations: %w", err)
	}
	return applied, nil
}

// verifyApplied checks the recorded migrations against the known ones:
// every recorded version must be known (else the database was written by a
// newer banger), have the same name and checksum, and the recorded versions
// must be exactly 1..n.
func verifyApplied(applied []appliedMigration, migs []migration) error {
	for i, a := range applied {
		if a.version > len(migs) || a.version < 1 {
			return fmt.Errorf("database records migration %04d_%s, which this binary does not know "+
				"(it knows up to %04d): the database was written by a newer banger", a.version, a.name, len(migs))
		}
		m := migs[a.version-1]
		if a.name != m.name {
			return fmt.Errorf("migration %04d: database records name %q, binary has %q", a.version, a.name, m.name)
		}
		if a.checksum != m.checksum {
			return fmt.Errorf("migration %s: checksum mismatch: database records %s, binary has %s "+
				"(was a released migration edited?)", m.file, a.checksum, m.checksum)
		}
		if a.version != i+1 {
			return fmt.Errorf("database records migration %04d but not %04d", a.version, i+1)
		}
	}
	return nil
}

// migrate brings the database on conn up to date with migs, one
// transaction per migration. It is safe against another process migrating
// the same file concurrently: each step re-reads the recorded state under
// the write lock.
func migrate(ctx context.Context, conn *sql.Conn, migs []migration) (err error) {
	if _, err := conn.ExecContext(ctx, "PRAGMA foreign_keys = OFF"); err != nil {
		return fmt.Errorf("migrate: disable foreign keys: %w", err)
	}
	defer func() {
		if _, ferr := conn.ExecContext(context.WithoutCancel(ctx), "PRAGMA foreign_keys = ON"); ferr != nil && err == nil {
			err = fmt.Errorf("migrate: enable foreign keys: %w", ferr)
		}
	}()
	for {
		done, err := migrateStep(ctx, conn, migs)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
	}
}

// migrateStep applies the first pending migration, if any, in one
// transaction. It reports done when nothing was pending.
func migrateStep(ctx context.Context, conn *sql.Conn, migs []migration) (done bool, err error) {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("migrate: begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if _, err := tx.ExecContext(ctx, migrationsTable); err != nil {
		return false, fmt.Errorf("migrate: create schema_migrations: %w", err)
	}
	applied, err := readApplied(ctx, tx)
	if err != nil {
		return false, fmt.Errorf("migrate: %w", err)
	}
	if err := verifyApplied(applied, migs); err != nil {
		return false, fmt.Errorf("migrate: %w", err)
	}
	if len(applied) == len(migs) {
		if err := tx.Commit(); err != nil {
			return false, fmt.Errorf("migrate: commit: %w", err)
		}
		return true, nil
	}

	m := migs[len(applied)]
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return false, fmt.Errorf("migration %s: %w", m.file, err)
	}
	if err := foreignKeyCheck(ctx, tx); err != nil {
		return false, fmt.Errorf("migration %s: %w", m.file, err)
	}
	now, err := formatTime(time.Now())
	if err != nil {
		return false, fmt.Errorf("migration %s: %w", m.file, err)
	}
	if _, err := tx.ExecContext(ctx,
		"INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)",
		m.version, m.name, m.checksum, now); err != nil {
		return false, fmt.Errorf("migration %s: record: %w", m.file, err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("migration %s: commit: %w", m.file, err)
	}
	return false, nil
}

// foreignKeyCheck fails if any row violates a foreign key.
func foreignKeyCheck(ctx context.Context, tx *sql.Tx) error {
	rows, err := tx.QueryContext(ctx, "PRAGMA foreign_key_check")
	if err != nil {
		return fmt.Errorf("foreign key check: %w", err)
	}
	defer rows.Close()
	if rows.Next() {
		var table, parent string
		var rowid sql.NullInt64
		var fkid int64
		if err := rows.Scan(&table, &rowid, &parent, &fkid); err != nil {
			return fmt.Errorf("foreign key check: %w", err)
		}
		return fmt.Errorf("foreign key violation: table %s row %d references missing %s", table, rowid.Int64, parent)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("foreign key check: %w", err)
	}
	return nil
}

// CheckMigrations verifies the embedded migrations and, if a database exists
// at path, that it is compatible with them. It never creates or modifies the
// file at path: the database is opened read-only, and as immutable when no
// -wal/-shm/-journal files exist beside it, so that none are created. An empty
// path or a path with no file checks only the embedded migrations.
//
// The embedded migrations must be numbered contiguously from 0001 with no
// duplicates and must all apply cleanly to a fresh in-memory database. Every
// migration the database records as applied must match the embedded one by
// name and sha256 checksum, and the database must not record a version this
// binary does not know. Pending migrations are fine: Open applies them.
func CheckMigrations(ctx context.Context, path string) error {
	migs, err := embeddedMigrations()
	if err != nil {
		return fmt.Errorf("check migrations: %w", err)
	}
	return checkMigrations(ctx, path, migs)
}

func checkMigrations(ctx context.Context, path string, migs []migration) error {
	if err := checkFresh(ctx, migs); err != nil {
		return fmt.Errorf("check migrations: %w", err)
	}
	if path == "" {
		return nil
	}
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check migrations: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("check migrations: %s is not a regular file", path)
	}
	if err := checkExisting(ctx, path, migs); err != nil {
		return fmt.Errorf("check migrations: %s: %w", path, err)
	}
	return nil
}

// checkFresh applies migs to a new in-memory database.
func checkFresh(ctx context.Context, migs []migration) error {
	db, err := sql.Open("sqlite", ":memory:")
	if err != nil {
		return fmt.Errorf("open in-memory database: %w", err)
	}
	defer db.Close()
	// Every connection to ":memory:" is a separate database: use exactly one.
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("open in-memory database: %w", err)
	}
	defer conn.Close()
	return migrate(ctx, conn, migs)
}

// checkExisting compares the migrations recorded in the database at path
// with migs, opening it read-only.
func checkExisting(ctx context.Context, path string, migs []migration) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	params := url.Values{
		"mode":    {"ro"},
		"_pragma": {"busy_timeout(" + strconv.FormatInt(busyTimeout.Milliseconds(), 10) + ")", "query_only(1)"},
	}
	// A read-only connection to a WAL database creates the -wal and -shm
	// files if they are missing. When none of the side files exist nobody
	// has the database open and the main file holds all of it, so read it
	// as immutable, which touches nothing. Otherwise the side files are
	// already there (a running daemon, or a crash) and SQLite must read
	// the WAL too.
	if !sideFilesExist(abs) {
		params.Set("immutable", "1")
	}
	db, err := sql.Open("sqlite", fileDSN(abs, params))
	if err != nil {
		return err
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()

	// Read everything in one transaction so the checks see one snapshot.
	tx, err := conn.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }() // read-only: nothing to keep

	var hasTable, objects int
	if err := tx.QueryRowContext(ctx, `SELECT
		    count(*) FILTER (WHERE type = 'table' AND name = 'schema_migrations'),
		    count(*) FILTER (WHERE name NOT LIKE 'sqlite_%')
		FROM sqlite_schema`).Scan(&hasTable, &objects); err != nil {
		return fmt.Errorf("read schema: %w", err)
	}
	if hasTable == 0 {
		if objects > 0 {
			return errors.New("database has tables but no schema_migrations table; not a banger database")
		}
		return nil // empty database: Open will apply everything
	}
	applied, err := readApplied(ctx, tx)
	if err != nil {
		return err
	}
	return verifyApplied(applied, migs)
}

// sideFilesExist reports whether any of SQLite's -wal, -shm or -journal
// files exist (or cannot be ruled out) next to the database at path.
func sideFilesExist(path string) bool {
	for _, suffix := range []string{"-wal", "-shm", "-journal"} {
		if _, err := os.Lstat(path + suffix); !errors.Is(err, fs.ErrNotExist) {
			return true
		}
	}
	return false
}
