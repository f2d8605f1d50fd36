package kohaku

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kohakuvault/kvaultfs/internal/kohakufixtures"
	"github.com/kohakuvault/kvaultfs/internal/kohakutest"
	"github.com/kohakuvault/kvaultfs/store"
)

// surveyState is what a survey must leave alone: the file's bytes and mtime
// and the names in its directory (no -wal, -shm or -journal left behind).
type surveyState struct {
	data  []byte
	mtime time.Time
	dir   []string
}

func stateOf(t *testing.T, path string) surveyState {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var mtime time.Time
	if fi, err := os.Stat(path); err == nil {
		mtime = fi.ModTime()
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return surveyState{data: data, mtime: mtime, dir: names}
}

func (s surveyState) check(t *testing.T, path, what string) {
	t.Helper()
	now := stateOf(t, path)
	if !bytes.Equal(now.data, s.data) {
		t.Errorf("%s: %s changed the file's bytes", path, what)
	}
	if !now.mtime.Equal(s.mtime) {
		t.Errorf("%s: %s changed the mtime from %v to %v", path, what, s.mtime, now.mtime)
	}
	if !slices.Equal(now.dir, s.dir) {
		t.Errorf("%s: %s changed the directory from %v to %v", path, what, s.dir, now.dir)
	}
}

// backdate sets a file's mtime into the past, so that a write within the
// same clock tick would still show.
func backdate(t *testing.T, path string) {
	t.Helper()
	old := time.Date(2020, 1, 2, 3, 4, 5, 6, time.UTC)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
}

// TestSurveyFixtures surveys every committed fixture (copies) and checks
// the tables and KV tables found against the fixture description, and that
// the survey changed nothing.
func TestSurveyFixtures(t *testing.T) {
	for _, f := range kohakufixtures.Files() {
		path := kohakutest.CopyFixture(t, f.Name)
		backdate(t, path)
		before := stateOf(t, path)
		s, err := SurveyFile(path)
		if err != nil {
			t.Fatalf("%s: %v", f.Name, err)
		}
		before.check(t, path, "SurveyFile")
		if !slices.Equal(s.Tables, f.Tables) {
			t.Errorf("%s: tables %v, want %v", f.Name, s.Tables, f.Tables)
		}
		var want []TableInfo
		for _, kv := range f.KV {
			format := FormatBC
			if kv.Format == kohakufixtures.FormatA {
				format = FormatA
			}
			want = append(want, TableInfo{Name: kv.Name, Format: format})
		}
		if !slices.Equal(s.KV, want) && !(len(s.KV) == 0 && len(want) == 0) {
			t.Errorf("%s: KV tables %v, want %v", f.Name, s.KV, want)
		}
	}
}

func TestFormatString(t *testing.T) {
	if FormatA.String() != "A" || FormatBC.String() != "B/C" || Format(0).String() != "Format(0)" {
		t.Errorf("got %q %q %q", FormatA, FormatBC, Format(0))
	}
}

func TestChoose(t *testing.T) {
	survey := func(name string) Survey {
		s, err := SurveyFile(kohakutest.CopyFixture(t, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return s
	}
	cases := []struct {
		fixture, table string
		want           TableInfo
		errs           []error
		msg            string
	}{
		{fixture: "format-a.db", want: TableInfo{"kv", FormatA}},
		{fixture: "format-b.db", want: TableInfo{"kv", FormatBC}},
		{fixture: "format-c.db", want: TableInfo{"kv", FormatBC}},
		{fixture: "format-c.db", table: "kv", want: TableInfo{"kv", FormatBC}},
		{fixture: "named.db", want: TableInfo{"kvault", FormatBC}},
		{fixture: "several.db", table: "images", want: TableInfo{"images", FormatA}},
		{fixture: "several.db", table: "kv", want: TableInfo{"kv", FormatBC}},
		{fixture: "several.db", errs: []error{ErrSeveralKVTables, store.ErrInvalidArgument},
			msg: "several KohakuVault tables: images, kv; choose one with --table"},
		{fixture: "several.db", table: "kohakuvault_meta", errs: []error{ErrNotKVTable, store.ErrInvalidArgument},
			msg: `table "kohakuvault_meta" is not a KohakuVault table: columns (key TEXT pk, value TEXT notnull)`},
		{fixture: "format-c.db", table: "text_vault", errs: []error{ErrNotKVTable, store.ErrInvalidArgument},
			msg: `table "text_vault" is not a KohakuVault table: a virtual table`},
		{fixture: "format-c.db", table: "nope", errs: []error{ErrNoKVTable, store.ErrNotFound},
			msg: `no table "nope" in the file (KohakuVault tables: kv)`},
		{fixture: "foreign.db", errs: []error{ErrNoKVTable, store.ErrNotFound},
			msg: "no KohakuVault table in the file (tables: orders, sessions, users)"},
		{fixture: "foreign.db", table: "users", errs: []error{ErrNotKVTable, store.ErrInvalidArgument},
			msg: `table "users" is not a KohakuVault table: columns (id INTEGER pk, name TEXT notnull, email TEXT)`},
	}
	for _, c := range cases {
		got, err := survey(c.fixture).Choose(c.table)
		if c.errs == nil {
			if err != nil || got != c.want {
				t.Errorf("%s Choose(%q) = %v, %v; want %v", c.fixture, c.table, got, err, c.want)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s Choose(%q) = %v, want an error", c.fixture, c.table, got)
			continue
		}
		for _, e := range c.errs {
			if !errors.Is(err, e) {
				t.Errorf("%s Choose(%q): %v is not %v", c.fixture, c.table, err, e)
			}
		}
		if err.Error() != c.msg {
			t.Errorf("%s Choose(%q): message %q, want %q", c.fixture, c.table, err, c.msg)
		}
	}
	// An empty survey: nothing to choose, by name or not.
	var empty Survey
	if _, err := empty.Choose(""); !errors.Is(err, ErrNoKVTable) || err.Error() != "no KohakuVault table in the file" {
		t.Errorf("empty survey: %v", err)
	}
	if _, err := empty.Choose("kv"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("empty survey, named: %v", err)
	}
}

// TestShapes builds tables near KohakuVault's shapes and checks that only
// the exact shapes are recognised.
func TestShapes(t *testing.T) {
	stmts := map[string]struct {
		sql  string
		want Format // 0: not a KV table
	}{
		"a_exact":       {"CREATE TABLE a_exact (id INTEGER PRIMARY KEY, key BLOB NOT NULL UNIQUE, value BLOB NOT NULL, size INTEGER NOT NULL)", FormatA},
		"a_case":        {"CREATE TABLE a_case (ID integer PRIMARY KEY, Key blob NOT NULL UNIQUE, VALUE Blob NOT NULL, size Integer NOT NULL)", FormatA},
		"a_reordered":   {"CREATE TABLE a_reordered (key BLOB NOT NULL UNIQUE, id INTEGER PRIMARY KEY, size INTEGER NOT NULL, value BLOB NOT NULL)", FormatA},
		"a_extra":       {"CREATE TABLE a_extra (id INTEGER PRIMARY KEY, key BLOB NOT NULL UNIQUE, value BLOB NOT NULL, size INTEGER NOT NULL, mtime INTEGER)", 0},
		"a_no_unique":   {"CREATE TABLE a_no_unique (id INTEGER PRIMARY KEY, key BLOB NOT NULL, value BLOB NOT NULL, size INTEGER NOT NULL)", 0},
		"a_int_id":      {"CREATE TABLE a_int_id (id INT PRIMARY KEY, key BLOB NOT NULL UNIQUE, value BLOB NOT NULL, size INTEGER NOT NULL)", 0},
		"a_null_size":   {"CREATE TABLE a_null_size (id INTEGER PRIMARY KEY, key BLOB NOT NULL UNIQUE, value BLOB NOT NULL, size INTEGER)", 0},
		"a_generated":   {"CREATE TABLE a_generated (id INTEGER PRIMARY KEY, key BLOB NOT NULL UNIQUE, value BLOB NOT NULL, size INTEGER NOT NULL, n INTEGER AS (size + 1))", 0},
		"bc_exact":      {"CREATE TABLE bc_exact (key BLOB PRIMARY KEY NOT NULL, value BLOB NOT NULL)", FormatBC},
		"bc_case":       {"CREATE TABLE bc_case (KEY blob PRIMARY KEY NOT NULL, value BLOB not null)", FormatBC},
		"bc_no_rowid":   {"CREATE TABLE bc_no_rowid (key BLOB PRIMARY KEY NOT NULL, value BLOB NOT NULL) WITHOUT ROWID", 0},
		"bc_text_key":   {"CREATE TABLE bc_text_key (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL)", 0},
		"bc_null_key":   {"CREATE TABLE bc_null_key (key BLOB PRIMARY KEY, value BLOB NOT NULL)", 0},
		"bc_null_value": {"CREATE TABLE bc_null_value (key BLOB PRIMARY KEY NOT NULL, value BLOB)", 0},
		"bc_no_pk":      {"CREATE TABLE bc_no_pk (key BLOB NOT NULL UNIQUE, value BLOB NOT NULL)", 0},
		"bc_pair_pk":    {"CREATE TABLE bc_pair_pk (key BLOB NOT NULL, value BLOB NOT NULL, PRIMARY KEY (key, value))", 0},
		"bc_extra":      {"CREATE TABLE bc_extra (key BLOB PRIMARY KEY NOT NULL, value BLOB NOT NULL, size INTEGER NOT NULL)", 0},
		"bc_strict":     {"CREATE TABLE bc_strict (key BLOB PRIMARY KEY NOT NULL, value BLOB NOT NULL) STRICT", FormatBC},
	}
	path := filepath.Join(t.TempDir(), "shapes.db")
	db, err := sql.Open("sqlite3", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range stmts {
		if _, err := db.Exec(s.sql); err != nil {
			t.Fatalf("%s: %v", s.sql, err)
		}
	}
	// A view with a KV table's columns is no table at all.
	if _, err := db.Exec("CREATE VIEW kv_view AS SELECT key, value FROM bc_exact"); err != nil {
		t.Fatal(err)
	}
	// SurveyDB on a caller's *sql.DB and *sql.Conn gives the same answer.
	ctx := context.Background()
	fromDB, err := SurveyDB(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fromConn, err := SurveyDB(ctx, conn)
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	fromFile, err := SurveyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []Survey{fromDB, fromConn, fromFile} {
		if len(s.Tables) != len(stmts) || slices.Contains(s.Tables, "kv_view") {
			t.Errorf("tables %v: want the %d tables, no view", s.Tables, len(stmts))
		}
		found := map[string]Format{}
		for _, kv := range s.KV {
			found[kv.Name] = kv.Format
		}
		for name, st := range stmts {
			if found[name] != st.want {
				t.Errorf("%s: surveyed as %v, want %v", name, found[name], st.want)
			}
		}
	}
	_, err = fromFile.Choose("bc_no_rowid")
	if !errors.Is(err, ErrNotKVTable) || !strings.Contains(err.Error(), "WITHOUT ROWID") {
		t.Errorf("Choose(bc_no_rowid): %v, want an error naming WITHOUT ROWID", err)
	}
	_, err = fromFile.Choose("a_no_unique")
	if !errors.Is(err, ErrNotKVTable) || !strings.Contains(err.Error(), "unique index") {
		t.Errorf("Choose(a_no_unique): %v, want an error naming the missing unique index", err)
	}
}

// TestSurveyNotSQLite: a file that is not SQLite is a clear error and stays
// byte-identical (nor gets a -journal or -wal beside it).
func TestSurveyNotSQLite(t *testing.T) {
	garbage := map[string][]byte{
		"text.txt":    []byte("users,orders\n1,2\n"),
		"short.bin":   []byte("SQLite"),
		"png.png":     append([]byte{0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'}, bytes.Repeat([]byte{7}, 4000)...),
		"magic.db":    append([]byte("SQLite format 3\x00"), bytes.Repeat([]byte{0xAB}, 8176)...), // right magic, broken header
		"one-zero.db": {0},
	}
	for name, content := range garbage {
		path := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(path, content, 0o644); err != nil {
			t.Fatal(err)
		}
		backdate(t, path)
		before := stateOf(t, path)
		s, err := SurveyFile(path)
		if err == nil {
			t.Errorf("%s: surveyed as %+v, want an error", name, s)
		}
		if !errors.Is(err, ErrNotSQLite) || !errors.Is(err, store.ErrInvalidArgument) || !strings.Contains(err.Error(), "not a SQLite database") {
			t.Errorf("%s: %v, want ErrNotSQLite and store.ErrInvalidArgument", name, err)
		}
		before.check(t, path, "SurveyFile")
	}
	dir := t.TempDir()
	if _, err := SurveyFile(dir); !errors.Is(err, store.ErrInvalidArgument) {
		t.Errorf("directory: %v, want store.ErrInvalidArgument", err)
	}
}

// TestSurveyEmpty: a 0-byte file and a missing file are empty surveys, and
// neither is created, grown nor given companions.
func TestSurveyEmpty(t *testing.T) {
	dir := t.TempDir()
	zero := filepath.Join(dir, "zero.db")
	if err := os.WriteFile(zero, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	backdate(t, zero)
	missing := filepath.Join(dir, "missing.db")
	for _, path := range []string{zero, missing} {
		before := stateOf(t, path)
		s, err := SurveyFile(path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if !s.Empty() || len(s.KV) != 0 || s.Tables == nil {
			t.Errorf("%s: %+v, want an empty survey with non-nil slices", path, s)
		}
		before.check(t, path, "SurveyFile")
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("SurveyFile created %s", missing)
	}
}

// TestSurveyWhileOpenElsewhere: another connection holds the WAL file open
// and has created a KV table that is still only in the -wal. The survey
// sees it (it reads through the WAL, not around it), and leaves the -wal and
// -shm of the other connection in place.
func TestSurveyWhileOpenElsewhere(t *testing.T) {
	path := kohakutest.CopyFixture(t, "format-a.db")
	db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	for _, stmt := range []string{
		"PRAGMA wal_autocheckpoint=0",
		"CREATE TABLE fresh (key BLOB PRIMARY KEY NOT NULL, value BLOB NOT NULL)",
	} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatal(err)
		}
	}
	if fi, err := os.Stat(path + "-wal"); err != nil || fi.Size() == 0 {
		t.Fatalf("the other connection has no -wal with content: %v", err)
	}
	before := stateOf(t, path)
	done := make(chan struct{})
	var s Survey
	go func() {
		defer close(done)
		s, err = SurveyFile(path)
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("SurveyFile hung beside another connection")
	}
	if err != nil {
		t.Fatal(err)
	}
	if want := []TableInfo{{"fresh", FormatBC}, {"kv", FormatA}}; !slices.Equal(s.KV, want) {
		t.Errorf("KV %v, want %v", s.KV, want)
	}
	before.check(t, path, "SurveyFile beside another connection")
	if _, err := os.Stat(path + "-wal"); err != nil {
		t.Errorf("the other connection's -wal is gone: %v", err)
	}
}

// TestSurveyOddPath: a path with the characters that end or escape a SQLite
// URI ('?', '#', '%') is surveyed as the file it names.
func TestSurveyOddPath(t *testing.T) {
	src := kohakutest.CopyFixture(t, "named.db")
	dir := filepath.Join(t.TempDir(), "a?b#c%20d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "we?ird#%41.db")
	if err := os.Rename(src, path); err != nil {
		t.Fatal(err)
	}
	before := stateOf(t, path)
	s, err := SurveyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := []TableInfo{{"kvault", FormatBC}}; !slices.Equal(s.KV, want) {
		t.Errorf("KV %v, want %v", s.KV, want)
	}
	before.check(t, path, "SurveyFile")
}
