package vault

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// Errors and bad input: every failure is one of the package's sentinels
// (or an I/O error) inside an *Error naming the operation and key, and
// none of them changes anything on disk.

// wantErr checks that err is sentinel, wrapped in an *Error for op and
// key whose message names both.
func wantErr(t *testing.T, err, sentinel error, op, key string) {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Fatalf("%s %q: got %v, want %v", op, key, err, sentinel)
	}
	var ve *Error
	if !errors.As(err, &ve) {
		t.Fatalf("%s %q: %v is not a *vault.Error", op, key, err)
	}
	if ve.Op != op || ve.Key != key {
		t.Errorf("%s %q: error %q has op %q and key %q", op, key, err, ve.Op, ve.Key)
	}
	if msg := err.Error(); !strings.HasPrefix(msg, op) || !strings.Contains(msg, strconvQuoteKey(key)) {
		t.Errorf("message %q does not name the operation %q and key %q", msg, op, key)
	}
}

func TestErrNotFound(t *testing.T) {
	v := openTest(t, nil)
	mustPut(t, v, "dir/file", []byte("x"))
	for _, key := range []string{"missing", "dir/missing", "nodir/x", "dir/file/below", "\x00missing"} {
		_, err := v.Get(key)
		wantErr(t, err, ErrNotFound, "get", key)
		_, err = v.GetTo(key, io.Discard)
		wantErr(t, err, ErrNotFound, "get", key)
		wantErr(t, v.Delete(key), ErrNotFound, "delete", key)
		_, err = v.Stat(key)
		wantErr(t, err, ErrNotFound, "stat", key)
		_, err = v.Open(key)
		wantErr(t, err, ErrNotFound, "open", key)
		wantErr(t, v.Rename(key, "elsewhere"), ErrNotFound, "rename", key)
		if ok, err := v.Exists(key); ok || err != nil {
			t.Errorf("Exists(%q) = %v, %v", key, ok, err)
		}
	}
	if _, err := v.Stat("elsewhere"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a failed rename created its target: %v", err)
	}
}

func TestBadOptions(t *testing.T) {
	set := func(f func(o *Options)) *Options { o := DefaultOptions(); f(o); return o }
	cases := []struct {
		option string
		opts   *Options
	}{
		{"ChunkSize", set(func(o *Options) { o.ChunkSize = 0 })},
		{"ChunkSize", set(func(o *Options) { o.ChunkSize = 1000 })},
		{"ChunkSize", set(func(o *Options) { o.ChunkSize = 4097 })},
		{"ChunkSize", set(func(o *Options) { o.ChunkSize = 128 << 20 })},
		{"ChunkSize", set(func(o *Options) { o.ChunkSize = -4096 })},
		{"Retries", set(func(o *Options) { o.Retries = -1 })},
		{"Retries", set(func(o *Options) { o.Retries = 1000 })},
		{"BackoffBase", set(func(o *Options) { o.BackoffBase = -time.Millisecond })},
		{"BackoffBase", set(func(o *Options) { o.BackoffBase = time.Hour })},
		{"Table", set(func(o *Options) { o.Table = "" })},
		{"Table", set(func(o *Options) { o.Table = "1abc" })},
		{"Table", set(func(o *Options) { o.Table = "my-table" })},
		{"Table", set(func(o *Options) { o.Table = "x; DROP TABLE y" })},
		{"Table", set(func(o *Options) { o.Table = "t\"" })},
		{"Table", set(func(o *Options) { o.Table = strings.Repeat("t", 65) })},
		{"PageSize", set(func(o *Options) { o.PageSize = 1000 })},
		{"PageSize", set(func(o *Options) { o.PageSize = 256 })},
		{"PageSize", set(func(o *Options) { o.PageSize = 1 << 17 })},
		{"PageSize", set(func(o *Options) { o.PageSize = -4096 })},
		{"MmapSize", set(func(o *Options) { o.MmapSize = -1 })},
		{"CacheKB", set(func(o *Options) { o.CacheKB = 0 })},
		{"CacheKB", set(func(o *Options) { o.CacheKB = -5 })},
		{"BusyTimeout", set(func(o *Options) { o.BusyTimeout = -time.Second })},
		{"BusyTimeout", set(func(o *Options) { o.BusyTimeout = 2 * time.Hour })},
	}
	seen := map[string]bool{}
	dir := t.TempDir()
	for i, c := range cases {
		path := filepath.Join(dir, fmt.Sprintf("v%d.db", i))
		v, err := Open(path, c.opts)
		if err == nil {
			v.Close()
			t.Fatalf("case %d: Open with a bad %s succeeded", i, c.option)
		}
		wantErr(t, err, ErrInvalidArgument, "open", path)
		if !strings.Contains(err.Error(), c.option) {
			t.Errorf("case %d: %q does not name the option %s", i, err, c.option)
		}
		if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("case %d: Open with a bad %s created the file", i, c.option)
		}
		seen[c.option] = true
	}
	if len(seen) != 8 {
		t.Errorf("options covered: %v", seen)
	}
	// Good edge values are accepted.
	good := []*Options{
		set(func(o *Options) { o.ChunkSize = 4096 }),
		set(func(o *Options) { o.ChunkSize = 64 << 20 }),
		set(func(o *Options) { o.Retries, o.BackoffBase, o.BusyTimeout, o.MmapSize = 0, 0, 0, 0 }),
		set(func(o *Options) { o.Table = "_T2" }),
		set(func(o *Options) { o.PageSize = 512 }),
		set(func(o *Options) { o.PageSize = 65536 }),
	}
	for i, o := range good {
		v, err := Open(filepath.Join(dir, fmt.Sprintf("good%d.db", i)), o)
		if err != nil {
			t.Fatalf("good options %d: %v", i, err)
		}
		mustPut(t, v, "k", []byte("v"))
		if err := v.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOpenInMissingDirectory(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{
		filepath.Join(dir, "missing", "v.db"),
		filepath.Join(dir, "missing", "deeper", "v.db"),
		filepath.Join(file, "v.db"), // below a file
	} {
		for _, opts := range []*Options{nil, {ReadOnly: true, ChunkSize: DefaultChunkSize, Table: DefaultTable, CacheKB: DefaultCacheKB}} {
			v, err := Open(path, opts)
			if err == nil {
				v.Close()
				t.Fatalf("Open(%s) succeeded", path)
			}
			var ve *Error
			if !errors.As(err, &ve) || ve.Op != "open" || ve.Key != path || !strings.Contains(err.Error(), path) {
				t.Errorf("Open(%s): %v does not name the operation and path", path, err)
			}
			if !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Open(%s) = %v, want fs.ErrNotExist", path, err)
			}
		}
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{"file"}) {
		t.Fatalf("Open created %q", names)
	}
}

func TestOpenDirectoryAsDatabase(t *testing.T) {
	dir := t.TempDir()
	_, err := Open(dir, nil)
	wantErr(t, err, ErrInvalidArgument, "open", dir)
	if names := dirNames(t, dir); len(names) != 0 {
		t.Fatalf("Open created %q", names)
	}
}

func TestOpenNotSQLite(t *testing.T) {
	for _, c := range []struct {
		name string
		data []byte
	}{
		{"text", bytes.Repeat([]byte("not a database\n"), 500)},
		{"short text", []byte("hi\n")},
		{"one byte", []byte{0}},
		{"random", genBytes(5, 8192)},
		{"zip", append([]byte("PK\x03\x04"), genBytes(6, 2000)...)},
		{"sqlite magic, garbage header", append([]byte("SQLite format 3\x00"), genBytes(7, 4096-16)...)},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "photo.jpg")
			if err := os.WriteFile(path, c.data, 0o644); err != nil {
				t.Fatal(err)
			}
			for _, opts := range []*Options{nil, {ReadOnly: true, ChunkSize: DefaultChunkSize, Table: DefaultTable, CacheKB: DefaultCacheKB}} {
				v, err := Open(path, opts)
				if err == nil {
					v.Close()
					t.Fatal("Open succeeded on a file that is not SQLite")
				}
				if !errors.Is(err, ErrInvalidArgument) && !errors.Is(err, ErrCorrupt) {
					t.Errorf("Open = %v, want ErrInvalidArgument (not a database)", err)
				}
				var ve *Error
				if !errors.As(err, &ve) || ve.Op != "open" || !strings.Contains(err.Error(), path) {
					t.Errorf("%v does not name the operation and path", err)
				}
				got, rerr := os.ReadFile(path)
				if rerr != nil || !bytes.Equal(got, c.data) {
					t.Fatalf("the file changed: %d bytes, was %d", len(got), len(c.data))
				}
				if names := dirNames(t, dir); !slices.Equal(names, []string{"photo.jpg"}) {
					t.Fatalf("Open left %q behind", names)
				}
			}
		})
	}
}

func TestOpenNewerFormat(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "v.db")
	v, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, v, "k", []byte("v"))
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	db := rawDB(t, path, false)
	if _, err := db.Exec(`UPDATE kvault_meta SET value = 99 WHERE key = 'format'`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	sum := fileSHA256(t, path)
	names := dirNames(t, dir)
	for _, opts := range []*Options{nil, {ReadOnly: true, ChunkSize: DefaultChunkSize, Table: DefaultTable, CacheKB: DefaultCacheKB}} {
		_, err = Open(path, opts)
		wantErr(t, err, ErrInvalidArgument, "open", path)
		if msg := err.Error(); !strings.Contains(msg, "99") || !strings.Contains(msg, "format") {
			t.Errorf("%q does not say the format is newer", msg)
		}
		if got := fileSHA256(t, path); got != sum {
			t.Fatal("a failed open of a newer format changed the file")
		}
		checkNoNewFiles(t, dir, names, opts != nil)
	}
}

func TestCreationOnlyOptionsNeverChangeALiveFile(t *testing.T) {
	dir := t.TempDir()
	pageSize := func(path string) (int, string) {
		db := rawDB(t, path, true)
		defer db.Close()
		var ps int
		var mode string
		if err := db.QueryRow(`PRAGMA page_size`).Scan(&ps); err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil {
			t.Fatal(err)
		}
		return ps, mode
	}
	for _, c := range []struct {
		create, other int
		wal           bool
	}{{4096, 8192, true}, {0, 4096, true}, {65536, 512, false}} {
		path := filepath.Join(dir, fmt.Sprintf("p%d.db", c.create))
		o := smallChunks()
		o.PageSize, o.EnableWAL = c.create, c.wal
		v, err := Open(path, o)
		if err != nil {
			t.Fatal(err)
		}
		mustPut(t, v, "old", []byte("old value"))
		if err := v.Close(); err != nil {
			t.Fatal(err)
		}
		want := c.create
		if want == 0 {
			want = DefaultPageSize
		}
		wantMode := map[bool]string{true: "wal", false: "delete"}[c.wal]
		if ps, mode := pageSize(path); ps != want || mode != wantMode {
			t.Fatalf("created with page size %d, %s; want %d, %s", ps, mode, want, wantMode)
		}
		sum := fileSHA256(t, path)

		// A different page size is an error naming the option.
		o2 := DefaultOptions()
		o2.PageSize = c.other
		_, err = Open(path, o2)
		wantErr(t, err, ErrInvalidArgument, "open", path)
		if !strings.Contains(err.Error(), "PageSize") {
			t.Errorf("%q does not name PageSize", err)
		}
		if fileSHA256(t, path) != sum {
			t.Fatal("the failed open changed the file")
		}

		// The other creation-only options are kept from the file: the
		// journal mode, and every file's chunk size.
		o3 := DefaultOptions()
		o3.EnableWAL = !c.wal
		o3.ChunkSize = 8192
		v, err = Open(path, o3)
		if err != nil {
			t.Fatal(err)
		}
		if st, err := v.Stat("old"); err != nil || st.ChunkSize != 4096 {
			t.Fatalf("old file's chunk size %d, %v; want 4096", st.ChunkSize, err)
		}
		mustPut(t, v, "new", bytes.Repeat([]byte("n"), 10000))
		if st, err := v.Stat("new"); err != nil || st.ChunkSize != 8192 {
			t.Fatalf("new file's chunk size %d, %v; want 8192", st.ChunkSize, err)
		}
		if got := mustGet(t, v, "old"); string(got) != "old value" {
			t.Fatalf("old = %q", got)
		}
		if err := v.Close(); err != nil {
			t.Fatal(err)
		}
		if ps, mode := pageSize(path); ps != want || mode != wantMode {
			t.Fatalf("after reopening with other options: page size %d, %s; want %d, %s", ps, mode, want, wantMode)
		}
	}
}

func TestOpenForeignSQLiteKeepsItsTables(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.db")
	db := rawDB(t, path, false)
	for _, s := range []string{
		`CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)`,
		`INSERT INTO photos (name) VALUES ('a.jpg'), ('b.jpg')`,
		`CREATE TABLE kvaultx_meta (key TEXT)`, // a near miss of our names
	} {
		if _, err := db.Exec(s); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	for _, table := range []string{"kvault", "second"} {
		o := DefaultOptions()
		o.Table = table
		if _, err := Open(path, o); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "tables of another program: kvaultx_meta, photos") {
			t.Fatalf("a vault was added to another program's database without Init: %v", err)
		}
		o.Init = true
		v, err := Open(path, o)
		if err != nil {
			t.Fatal(err)
		}
		mustPut(t, v, "k", []byte(table))
		if err := v.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for _, table := range []string{"kvault", "second"} {
		o := DefaultOptions()
		o.Table = table
		v, err := Open(path, o)
		if err != nil {
			t.Fatal(err)
		}
		if got := mustGet(t, v, "k"); string(got) != table {
			t.Fatalf("vault %s: k = %q", table, got)
		}
		v.Close()
	}
	db = rawDB(t, path, true)
	if n := rawCount(t, db, `SELECT count(*) FROM photos WHERE name IN ('a.jpg', 'b.jpg')`); n != 2 {
		t.Fatalf("the application's table has %d of its 2 rows", n)
	}
}

// TestEmptyKey: the empty key is a key like any other, as in KohakuVault
// (whose files may hold it): a binary key, under /.kvault/keys in the
// mount, through every dict operation.
func TestEmptyKey(t *testing.T) {
	v := openTest(t, nil)
	mustPut(t, v, "x", []byte("x"))
	mustPut(t, v, "", []byte("empty key"))
	if got := mustGet(t, v, ""); string(got) != "empty key" {
		t.Fatalf("Get(\"\") = %q", got)
	}
	var buf bytes.Buffer
	if _, err := v.GetTo("", &buf); err != nil || buf.String() != "empty key" {
		t.Fatalf("GetTo(\"\") = %q, %v", buf.String(), err)
	}
	if ok, err := v.Exists(""); !ok || err != nil {
		t.Fatalf("Exists(\"\") = %v, %v", ok, err)
	}
	if in, err := v.Stat(""); err != nil || in.Size != 9 {
		t.Fatalf("Stat(\"\") = %+v, %v", in, err)
	}
	if err := v.PutReader("", strings.NewReader("streamed"), 8); err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	for k, err := range v.Keys("") {
		if err != nil {
			t.Fatal(err)
		}
		keys[k] = true
	}
	if !keys[""] || !keys["x"] || len(keys) != 2 {
		t.Fatalf("Keys = %v, want the empty key and x", keys)
	}
	if n, err := v.Len(); n != 2 || err != nil {
		t.Fatalf("Len = %d, %v", n, err)
	}
	if err := v.Rename("", "y"); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, v, "y"); string(got) != "streamed" {
		t.Fatalf("after Rename(\"\", y): y = %q", got)
	}
	mustPut(t, v, "", []byte("x"))
	if err := v.Delete(""); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Get(""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after Delete: %v", err)
	}
}

func TestPutBelowAFile(t *testing.T) {
	v := openTest(t, smallChunks())
	mustPut(t, v, "a", []byte("file"))
	mustPut(t, v, "x", []byte("x"))
	mustPut(t, v, "d/e", []byte("e"))
	before := dbDigest(t, v.Path())
	for _, key := range []string{"a/b", "a/b/c", "d/e/f"} {
		wantErr(t, v.Put(key, []byte("v")), ErrNotDir, "put", key)
		wantErr(t, v.Put(key, []byte("v")), ErrInvalidArgument, "put", key)
		wantErr(t, v.PutReader(key, strings.NewReader("v"), -1), ErrNotDir, "put", key)
		// A streamed put learns it only at the end, after several batches.
		wantErr(t, v.PutReader(key, &genReader{seed: 1, size: 2*streamBatchBytes + 5}, -1), ErrNotDir, "put", key)
		_, err := v.OpenFile(key, os.O_RDWR|os.O_CREATE, 0o644)
		wantErr(t, err, ErrNotDir, "open", key)
		wantErr(t, v.Rename("x", key), ErrNotDir, "rename", "x")
		_, err = v.Get(key)
		wantErr(t, err, ErrNotFound, "get", key)
		wantErr(t, v.Delete(key), ErrNotFound, "delete", key)
	}
	// A directory is not a value.
	wantErr(t, v.Put("d", []byte("v")), ErrIsDir, "put", "d")
	_, err := v.Get("d")
	wantErr(t, err, ErrIsDir, "get", "d")
	wantErr(t, v.Delete("d"), ErrIsDir, "delete", "d")
	wantErr(t, v.Rename("x", "d"), ErrIsDir, "rename", "x")
	wantErr(t, v.Rename("d", "x"), ErrNotDir, "rename", "d")
	wantErr(t, v.Rename("d", "d/e2"), ErrInvalidArgument, "rename", "d")
	if got := dbDigest(t, v.Path()); got != before {
		t.Fatal("a failed put, open or rename changed the database")
	}
	if got := mustGet(t, v, "a"); string(got) != "file" {
		t.Fatal("a changed")
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, v.Path())
}

func TestErrBusy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v.db")
	o := DefaultOptions()
	o.BusyTimeout, o.Retries, o.BackoffBase = 30*time.Millisecond, 2, 5*time.Millisecond
	v, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	mustPut(t, v, "k", []byte("old"))
	db := rawDB(t, path, false)
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = v.Put("k", []byte("new"))
	took := time.Since(start)
	wantErr(t, err, ErrBusy, "put", "k")
	// Three attempts of 30 ms each, with 5 and 10 ms between them.
	if took < 90*time.Millisecond {
		t.Errorf("ErrBusy after %v: the retries did not wait", took)
	}
	wantErr(t, v.Delete("k"), ErrBusy, "delete", "k")
	// Readers are not blocked by a writer.
	if got := mustGet(t, v, "k"); string(got) != "old" {
		t.Fatalf("k = %q while locked", got)
	}
	if _, err := conn.ExecContext(ctx, `ROLLBACK`); err != nil {
		t.Fatal(err)
	}
	mustPut(t, v, "k", []byte("new"))
	if got := mustGet(t, v, "k"); string(got) != "new" {
		t.Fatalf("k = %q", got)
	}
}

var errWriterBroke = errors.New("writer broke")

type brokenWriter struct{}

func (brokenWriter) Write([]byte) (int, error) { return 0, errWriterBroke }

func TestIOErrorsAreWrapped(t *testing.T) {
	v := openTest(t, nil)
	mustPut(t, v, "k", []byte("value"))
	_, err := v.GetTo("k", brokenWriter{})
	wantErr(t, err, errWriterBroke, "get", "k")
	wantErr(t, v.PutReader("k2", &failingReader{g: genReader{size: 100}, n: 10, err: errReaderBroke}, -1), errReaderBroke, "put", "k2")
}

// roContent is what the read-only tests store.
var roContent = map[string][]byte{
	"ro/a":   genBytes(20, 10000),
	"ro/b":   []byte("bee"),
	"\x01ro": []byte("binary key"),
}

func writeROContent(t *testing.T, path string) {
	t.Helper()
	v, err := Open(path, smallChunks())
	if err != nil {
		t.Fatal(err)
	}
	for k, val := range roContent {
		mustPut(t, v, k, val)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
}

// checkReadOnlyVault opens the vault at path, which this process cannot
// write, and checks that reads work and every write fails with
// ErrReadOnly saying why (why is part of the message).
func checkReadOnlyVault(path, why string, opts *Options) error {
	v, err := Open(path, opts)
	if err != nil {
		return fmt.Errorf("Open: %w", err)
	}
	defer v.Close()
	if !v.ReadOnly() {
		return errors.New("ReadOnly() is false")
	}
	var keys []string
	for k, err := range v.Keys("") {
		if err != nil {
			return fmt.Errorf("Keys: %w", err)
		}
		keys = append(keys, k)
	}
	if len(keys) != len(roContent) {
		return fmt.Errorf("Keys = %q", keys)
	}
	for k, want := range roContent {
		got, err := v.Get(k)
		if err != nil || !bytes.Equal(got, want) {
			return fmt.Errorf("Get(%q) = %d bytes, %v", k, len(got), err)
		}
		var buf bytes.Buffer
		if _, err := v.GetTo(k, &buf); err != nil || !bytes.Equal(buf.Bytes(), want) {
			return fmt.Errorf("GetTo(%q): %v", k, err)
		}
		f, err := v.Open(k)
		if err != nil {
			return fmt.Errorf("Open(%q): %w", k, err)
		}
		p := make([]byte, len(want))
		if n, err := f.ReadAt(p, 0); n != len(want) || (err != nil && err != io.EOF) || !bytes.Equal(p, want) {
			return fmt.Errorf("ReadAt(%q) = %d, %v", k, n, err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("File.Close: %w", err)
		}
	}
	if n, err := v.Len(); err != nil || n != len(roContent) {
		return fmt.Errorf("Len = %d, %v", n, err)
	}
	writes := map[string]func() error{
		"Put":       func() error { return v.Put("ro/a", []byte("new")) },
		"Put new":   func() error { return v.Put("new", []byte("new")) },
		"PutReader": func() error { return v.PutReader("ro/b", strings.NewReader("new"), 3) },
		"Delete":    func() error { return v.Delete("ro/b") },
		"Rename":    func() error { return v.Rename("ro/a", "ro/c") },
		"OpenFile":  func() error { _, err := v.OpenFile("ro/a", os.O_RDWR, 0); return err },
		"create":    func() error { _, err := v.OpenFile("ro/new", os.O_RDWR|os.O_CREATE, 0o644); return err },
		"cache":     func() error { return v.EnableCache(1<<20, 1<<19) },
		"Optimize":  func() error { return v.Optimize() },
		"write File": func() error {
			f, err := v.Open("ro/a")
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteAt([]byte("x"), 0)
			return err
		},
	}
	for name, w := range writes {
		err := w()
		if name == "write File" {
			if !errors.Is(err, ErrPermission) {
				return fmt.Errorf("%s on a file opened for reading = %v, want ErrPermission", name, err)
			}
			continue
		}
		if !errors.Is(err, ErrReadOnly) {
			return fmt.Errorf("%s = %v, want ErrReadOnly", name, err)
		}
		if msg := err.Error(); !strings.Contains(msg, "read-only") || !strings.Contains(msg, why) {
			return fmt.Errorf("%s: %q does not say read-only and %q", name, msg, why)
		}
	}
	for k, want := range roContent {
		if got, err := v.Get(k); err != nil || !bytes.Equal(got, want) {
			return fmt.Errorf("after the failed writes, Get(%q) = %d bytes, %v", k, len(got), err)
		}
	}
	return v.Close()
}

func init() {
	registerHelper("readonly", func(args []string) error { return checkReadOnlyVault(args[0], args[1], nil) })
}

func TestReadOnlyFileAndDirectory(t *testing.T) {
	root := os.Geteuid() == 0
	base, err := os.MkdirTemp("", "kvault-ro-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		filepath.Walk(base, func(p string, info fs.FileInfo, err error) error {
			if err == nil && info.IsDir() {
				os.Chmod(p, 0o755)
			}
			return nil
		})
		os.RemoveAll(base)
	})
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	var exe string
	if root {
		exe = sharedExecutable(t, base)
	}
	// run checks the vault as a user that is not root: a child running as
	// nobody when this process is root (root ignores permissions), or
	// this process otherwise.
	run := func(t *testing.T, path, why string) {
		if !root {
			if err := checkReadOnlyVault(path, why, nil); err != nil {
				t.Fatal(err)
			}
			return
		}
		cmd := helperCmd(t, exe, "readonly", path, why)
		cmd.Dir = base
		asNobody(cmd)
		runHelper(t, cmd)
	}
	for _, c := range []struct {
		name, why string
		setup     func(t *testing.T, dir, path string)
	}{
		{"read-only file", "not writable", func(t *testing.T, dir, path string) {
			// The directory is writable by the user, the file is not.
			chmod(t, dir, 0o777)
			chmod(t, path, 0o444)
		}},
		{"read-only directory", "directory", func(t *testing.T, dir, path string) {
			// The file is writable by the user, its directory is not.
			if root {
				if err := os.Chown(path, 65534, 65534); err != nil {
					t.Fatal(err)
				}
			}
			chmod(t, path, 0o644)
			chmod(t, dir, 0o555)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(base, strings.ReplaceAll(c.name, " ", "-"))
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "v.db")
			writeROContent(t, path)
			c.setup(t, dir, path)
			sum := fileSHA256(t, path)
			names := dirNames(t, dir)
			run(t, path, c.why)
			if fileSHA256(t, path) != sum {
				t.Error("the read-only vault's file changed")
			}
			checkNoNewFiles(t, dir, names, true)
			// The owner can still open it normally afterwards.
			chmod(t, dir, 0o755)
			chmod(t, path, 0o644)
			v, err := Open(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if v.ReadOnly() {
				t.Error("writable again, but opened read-only")
			}
			mustPut(t, v, "after", []byte("x"))
			if err := v.Close(); err != nil {
				t.Fatal(err)
			}
			checkConsistent(t, path)
		})
	}
	t.Run("ReadOnly option", func(t *testing.T) {
		dir := filepath.Join(base, "option")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "v.db")
		writeROContent(t, path)
		sum := fileSHA256(t, path)
		o := DefaultOptions()
		o.ReadOnly = true
		if err := checkReadOnlyVault(path, "opened read-only", o); err != nil {
			t.Fatal(err)
		}
		if fileSHA256(t, path) != sum {
			t.Error("the vault opened read-only changed its file")
		}
		checkNoNewFiles(t, dir, []string{"v.db"}, true)
	})
}

// checkNoNewFiles checks that dir holds just the files it held before.
// With readOnly, SQLite's shared-memory index (-shm) and an empty -wal
// may be left behind: a read-only connection to a WAL database creates
// them when the directory allows it, and cannot checkpoint to remove
// them; they hold no data and the .db file alone stays complete.
func checkNoNewFiles(t *testing.T, dir string, before []string, readOnly bool) {
	t.Helper()
	for _, name := range dirNames(t, dir) {
		if slices.Contains(before, name) {
			continue
		}
		if readOnly && strings.HasSuffix(name, "-shm") {
			continue
		}
		if readOnly && strings.HasSuffix(name, "-wal") && fileSize(filepath.Join(dir, name)) == 0 {
			continue
		}
		t.Errorf("%s appeared in %s (before: %q)", name, dir, before)
	}
}

func chmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}
