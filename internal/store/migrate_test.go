package store

import (
	"bytes"
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
)

// openRaw opens the file at path with the driver directly, bypassing Store,
// so tests can inspect or tamper with it.
func openRaw(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

type appliedRow struct {
	version                   int
	name, checksum, appliedAt string
}

func readAppliedRows(t *testing.T, path string) []appliedRow {
	t.Helper()
	db := openRaw(t, path)
	rows, err := db.Query("SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []appliedRow
	for rows.Next() {
		var r appliedRow
		if err := rows.Scan(&r.version, &r.name, &r.checksum, &r.appliedAt); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}

func mustEmbedded(t *testing.T) []migration {
	t.Helper()
	migs, err := embeddedMigrations()
	if err != nil {
		t.Fatalf("embedded migrations: %v", err)
	}
	return migs
}

// migratedDB creates a fully migrated, closed database and returns its path.
func migratedDB(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestEmbeddedMigrationsValid(t *testing.T) {
	migs := mustEmbedded(t)
	if migs[0].version != 1 || migs[0].name != "init" {
		t.Fatalf("first migration = %v, want 0001_init.sql", migs[0])
	}
	for _, m := range migs {
		if len(m.checksum) != 64 {
			t.Errorf("%s: checksum %q is not hex sha256", m, m.checksum)
		}
	}
}

func TestOpenFreshAndReopen(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "state", "nested")
	path := filepath.Join(dir, "banger.db")

	s, err := Open(ctx, path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 {
		t.Errorf("directory mode = %o, want 700", perm)
	}
	fi, err = os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		t.Errorf("database mode = %o, want no group/other access", perm)
	}

	if err := s.CreateVM(ctx, testVM("id", "x")); err != nil {
		t.Fatal(err)
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		fi, err := os.Stat(path + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("%s mode = %o, want no group/other access", suffix, perm)
		}
	}

	// Connection settings hold on every pooled connection, not just the first.
	conns := make([]*sql.Conn, 3)
	for i := range conns {
		c, err := s.db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
		var mode string
		var fk, busy int
		if err := c.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
			t.Fatal(err)
		}
		if err := c.QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&fk); err != nil {
			t.Fatal(err)
		}
		if err := c.QueryRowContext(ctx, "PRAGMA busy_timeout").Scan(&busy); err != nil {
			t.Fatal(err)
		}
		if mode != "wal" || fk != 1 || busy <= 0 {
			t.Errorf("conn %d: journal_mode=%s foreign_keys=%d busy_timeout=%d", i, mode, fk, busy)
		}
	}
	for _, c := range conns {
		c.Close()
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	migs := mustEmbedded(t)
	first := readAppliedRows(t, path)
	if len(first) != len(migs) {
		t.Fatalf("applied %d migrations, want %d", len(first), len(migs))
	}
	for i, r := range first {
		m := migs[i]
		if r.version != m.version || r.name != m.name || r.checksum != m.checksum {
			t.Errorf("row %d = %+v, want %s (%s)", i, r, m, m.checksum)
		}
		if _, err := parseTime(r.appliedAt); err != nil {
			t.Errorf("row %d applied_at: %v", i, err)
		}
	}

	// Re-opening applies nothing.
	s, err = Open(ctx, path)
	if err != nil {
		t.Fatalf("re-Open: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if second := readAppliedRows(t, path); !slices.Equal(first, second) {
		t.Errorf("re-open changed schema_migrations:\nbefore %+v\nafter  %+v", first, second)
	}
}

func TestOpenAppliesPendingMigrations(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	v1 := fstest.MapFS{
		"0001_things.sql": {Data: []byte("CREATE TABLE things (id TEXT PRIMARY KEY);")},
	}
	v2 := fstest.MapFS{
		"0001_things.sql": v1["0001_things.sql"],
		"0002_parts.sql": {Data: []byte(`
			CREATE TABLE parts (thing TEXT NOT NULL REFERENCES things (id) ON DELETE CASCADE);
			CREATE INDEX parts_by_thing ON parts (thing);`)},
	}
	migs1, err := loadMigrations(v1)
	if err != nil {
		t.Fatal(err)
	}
	migs2, err := loadMigrations(v2)
	if err != nil {
		t.Fatal(err)
	}

	s, err := openWith(ctx, path, migs1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.ExecContext(ctx, "INSERT INTO things VALUES ('a')"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	before := readAppliedRows(t, path)

	// An older binary's check passes on its own schema; the newer binary's
	// check passes on the older schema (pending migrations are fine).
	if err := checkMigrations(ctx, path, migs1); err != nil {
		t.Errorf("check v1 on v1 database: %v", err)
	}
	if err := checkMigrations(ctx, path, migs2); err != nil {
		t.Errorf("check v2 on v1 database: %v", err)
	}

	s, err = openWith(ctx, path, migs2)
	if err != nil {
		t.Fatalf("open with v2: %v", err)
	}
	// Multi-statement migrations run completely, and foreign keys are back on.
	if _, err := s.db.ExecContext(ctx, "INSERT INTO parts VALUES ('a')"); err != nil {
		t.Errorf("insert into migrated table: %v", err)
	}
	if _, err := s.db.ExecContext(ctx, "INSERT INTO parts VALUES ('missing')"); err == nil {
		t.Error("foreign key not enforced after migration")
	}
	s.Close()

	after := readAppliedRows(t, path)
	if len(after) != 2 || after[0] != before[0] || after[1].version != 2 || after[1].name != "parts" {
		t.Errorf("schema_migrations after upgrade = %+v", after)
	}

	// The old binary now refuses the database.
	if _, err := openWith(ctx, path, migs1); err == nil || !strings.Contains(err.Error(), "newer banger") {
		t.Errorf("open v2 database with v1 binary: err = %v, want newer-banger error", err)
	}
	if err := checkMigrations(ctx, path, migs1); err == nil {
		t.Error("check v2 database with v1 binary passed")
	}
}

func TestMigrationFailureRollsBack(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	migs, err := loadMigrations(fstest.MapFS{
		"0001_ok.sql":  {Data: []byte("CREATE TABLE a (x INTEGER);")},
		"0002_bad.sql": {Data: []byte("CREATE TABLE b (x INTEGER); INSERT INTO nope VALUES (1);")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openWith(ctx, path, migs); err == nil || !strings.Contains(err.Error(), "0002_bad.sql") {
		t.Fatalf("open: err = %v, want failure naming 0002_bad.sql", err)
	}
	rows := readAppliedRows(t, path)
	if len(rows) != 1 || rows[0].version != 1 {
		t.Errorf("applied = %+v, want only 0001", rows)
	}
	db := openRaw(t, path)
	var n int
	if err := db.QueryRow("SELECT count(*) FROM sqlite_schema WHERE name = 'b'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Error("table from failed migration survived")
	}
}

func TestMigrationForeignKeyViolationFails(t *testing.T) {
	migs, err := loadMigrations(fstest.MapFS{
		"0001_a.sql": {Data: []byte(`
			CREATE TABLE p (id INTEGER PRIMARY KEY);
			CREATE TABLE c (p INTEGER REFERENCES p (id));
			INSERT INTO c VALUES (42);`)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := checkMigrations(context.Background(), "", migs); err == nil || !strings.Contains(err.Error(), "foreign key") {
		t.Errorf("err = %v, want foreign key violation", err)
	}
}

func TestLoadMigrationsValidation(t *testing.T) {
	sql := []byte("SELECT 1;")
	tests := []struct {
		name  string
		files fstest.MapFS
		want  string
	}{
		{"empty", fstest.MapFS{}, "no migrations"},
		{"gap", fstest.MapFS{"0001_a.sql": {Data: sql}, "0003_c.sql": {Data: sql}}, "contiguous"},
		{"starts at 2", fstest.MapFS{"0002_b.sql": {Data: sql}}, "contiguous"},
		{"starts at 0", fstest.MapFS{"0000_z.sql": {Data: sql}, "0001_a.sql": {Data: sql}}, "contiguous"},
		{"duplicate", fstest.MapFS{"0001_a.sql": {Data: sql}, "0001_b.sql": {Data: sql}}, "defined twice"},
		{"bad name", fstest.MapFS{"0001_a.sql": {Data: sql}, "2_b.sql": {Data: sql}}, "NNNN_name.sql"},
		{"stray file", fstest.MapFS{"0001_a.sql": {Data: sql}, "README.md": {Data: sql}}, "NNNN_name.sql"},
		{"upper case", fstest.MapFS{"0001_A.sql": {Data: sql}}, "NNNN_name.sql"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadMigrations(tt.files)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestCheckMigrationsBadSQL(t *testing.T) {
	migs, err := loadMigrations(fstest.MapFS{
		"0001_a.sql": {Data: []byte("CREATE TABLE a (x INTEGER);")},
		"0002_b.sql": {Data: []byte("CREATE TABLE a (x INTEGER);")},
	})
	if err != nil {
		t.Fatal(err)
	}
	err = checkMigrations(context.Background(), "", migs)
	if err == nil || !strings.Contains(err.Error(), "0002_b.sql") {
		t.Errorf("err = %v, want failure naming 0002_b.sql", err)
	}
}

func TestCheckMigrationsNoFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "state.db")
	if err := CheckMigrations(context.Background(), path); err != nil {
		t.Fatalf("CheckMigrations on missing file: %v", err)
	}
	if names := dirNames(t, dir); len(names) != 0 {
		t.Errorf("CheckMigrations created %v", names)
	}
	if err := CheckMigrations(context.Background(), ""); err != nil {
		t.Fatalf("CheckMigrations with empty path: %v", err)
	}
}

func TestCheckMigrationsEmptyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CheckMigrations(context.Background(), path); err != nil {
		t.Errorf("CheckMigrations on empty file: %v", err)
	}
}

func TestCheckMigrationsMigratedDB(t *testing.T) {
	ctx := context.Background()
	path := migratedDB(t)
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateVM(ctx, testVM("vm1", "web")); err != nil {
		t.Fatal(err)
	}

	// While the daemon has it open (live WAL).
	if err := CheckMigrations(ctx, path); err != nil {
		t.Errorf("CheckMigrations on open database: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Closed: the check neither changes the file nor leaves anything behind.
	dir := filepath.Dir(path)
	namesBefore := dirNames(t, dir)
	dataBefore, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fiBefore, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckMigrations(ctx, path); err != nil {
		t.Errorf("CheckMigrations on closed database: %v", err)
	}
	dataAfter, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fiAfter, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dataBefore, dataAfter) || !fiBefore.ModTime().Equal(fiAfter.ModTime()) {
		t.Error("CheckMigrations modified the database file")
	}
	if namesAfter := dirNames(t, dir); !slices.Equal(namesBefore, namesAfter) {
		t.Errorf("directory changed: before %v, after %v", namesBefore, namesAfter)
	}
}

func TestCheckMigrationsChecksumMismatch(t *testing.T) {
	ctx := context.Background()
	path := migratedDB(t)
	db := openRaw(t, path)
	if _, err := db.Exec("UPDATE schema_migrations SET checksum = ? WHERE version = 1", strings.Repeat("0", 64)); err != nil {
		t.Fatal(err)
	}
	db.Close()

	err := CheckMigrations(ctx, path)
	if err == nil || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Errorf("CheckMigrations: err = %v, want checksum mismatch", err)
	}
	if _, err := Open(ctx, path); err == nil || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Errorf("Open: err = %v, want checksum mismatch", err)
	}
}

func TestCheckMigrationsNameMismatch(t *testing.T) {
	path := migratedDB(t)
	db := openRaw(t, path)
	if _, err := db.Exec("UPDATE schema_migrations SET name = 'renamed' WHERE version = 1"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if err := CheckMigrations(context.Background(), path); err == nil || !strings.Contains(err.Error(), "renamed") {
		t.Errorf("err = %v, want name mismatch", err)
	}
}

func TestCheckMigrationsFutureVersion(t *testing.T) {
	ctx := context.Background()
	path := migratedDB(t)
	future := len(mustEmbedded(t)) + 1
	db := openRaw(t, path)
	if _, err := db.Exec(
		"INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?, 'from_the_future', ?, ?)",
		future, strings.Repeat("a", 64), "2099-01-01T00:00:00.000000000Z"); err != nil {
		t.Fatal(err)
	}
	db.Close()

	err := CheckMigrations(ctx, path)
	if err == nil || !strings.Contains(err.Error(), "newer banger") {
		t.Errorf("CheckMigrations: err = %v, want newer-banger error", err)
	}
	if _, err := Open(ctx, path); err == nil || !strings.Contains(err.Error(), "newer banger") {
		t.Errorf("Open: err = %v, want newer-banger error", err)
	}
}

func TestCheckMigrationsForeignDatabase(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()

	notDB := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(notDB, bytes.Repeat([]byte("not a database "), 512), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CheckMigrations(ctx, notDB); err == nil {
		t.Error("CheckMigrations passed on a non-database file")
	}

	other := filepath.Join(dir, "other.db")
	db := openRaw(t, other)
	if _, err := db.Exec("CREATE TABLE unrelated (x)"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if err := CheckMigrations(ctx, other); err == nil || !strings.Contains(err.Error(), "not a banger database") {
		t.Errorf("err = %v, want not-a-banger-database error", err)
	}

	if err := CheckMigrations(ctx, dir); err == nil {
		t.Error("CheckMigrations passed on a directory")
	}
}

func TestOpenPathWithSpecialCharacters(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "we?ird #dir%20", "state.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := s.CreateVM(ctx, testVM("id1", "a")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database not at the literal path: %v", err)
	}
	if err := CheckMigrations(ctx, path); err != nil {
		t.Errorf("CheckMigrations: %v", err)
	}
}
