package kohaku

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kohakuvault/kvaultfs/store"
)

// oddFile builds a table holding rows another program wrote with types
// KohakuVault never writes: values stored as INTEGER, TEXT, REAL and
// NULL-free odd ones, a key stored as TEXT, and (format A) a size column
// that lies or holds TEXT. Bypassing NOT NULL is impossible, so no NULL.
func oddFile(t *testing.T, f Format) *Table {
	t.Helper()
	path := newFile(t, f, true)
	db := rawDB(t, path)
	ins := `INSERT INTO kv(key, value) VALUES (?1, ?2)`
	if f == FormatA {
		ins = `INSERT INTO kv(key, value, size) VALUES (?1, ?2, ?3)`
	}
	rows := []struct{ key, val, size any }{
		{[]byte("int"), 42, 2},
		{[]byte("text"), "héllo", 6},
		{"textkey", []byte("abc"), 3},
		{[]byte("real"), 3.5, 3},
		{[]byte("good"), []byte("12345"), 5},
		{[]byte("liar"), []byte("12345"), 999},
		{[]byte("sizetext"), []byte("12345"), "abc"},
	}
	for _, r := range rows {
		args := []any{r.key, r.val}
		if f == FormatA {
			args = append(args, r.size)
		}
		if _, err := db.Exec(ins, args...); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	tb, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tb.Close() })
	return tb
}

// wantErr checks that err is a *store.Error of op wrapping kind, with
// text in its message.
func wantErr(t *testing.T, what string, err error, op string, kind error, text string) {
	t.Helper()
	var se *store.Error
	if !errors.As(err, &se) || se.Op != op || !errors.Is(err, kind) || !strings.Contains(err.Error(), text) {
		t.Errorf("%s: %v, want a %q error of kind %v saying %q", what, err, op, kind, text)
	}
}

// TestOddRows: every read path refuses a value that is not a BLOB as
// store.ErrCorrupt naming its stored type (KohakuVault cannot read it
// either), never returns its text form or a character count; a TEXT key
// is not found (KohakuVault binds keys as BLOBs); Scan reports the BLOB's
// length, not format A's size column; Verify reports every odd row
// without aborting.
func TestOddRows(t *testing.T) {
	watchdog(t, time.Minute)
	for _, f := range formats {
		t.Run(f.String(), func(t *testing.T) {
			tb := oddFile(t, f)
			for _, c := range []struct{ key, typ string }{{"int", "integer"}, {"text", "text"}, {"real", "real"}} {
				_, err := tb.Get(c.key)
				wantErr(t, "Get "+c.key, err, "get", store.ErrCorrupt, "stored as "+c.typ+", not a BLOB")
				_, err = tb.Size(c.key)
				wantErr(t, "Size "+c.key, err, "size", store.ErrCorrupt, "stored as "+c.typ)
				_, err = tb.ReadAt(c.key, make([]byte, 10), 0)
				wantErr(t, "ReadAt "+c.key, err, "read", store.ErrCorrupt, "stored as "+c.typ)
				var b bytes.Buffer
				_, err = tb.GetTo(c.key, &b)
				wantErr(t, "GetTo "+c.key, err, "get to", store.ErrCorrupt, "stored as "+c.typ)
				if b.Len() != 0 {
					t.Errorf("GetTo %s wrote %q", c.key, b.Bytes())
				}
			}
			_, err := tb.Get("textkey")
			wantErr(t, "Get textkey", err, "get", store.ErrNotFound, "not found")
			_, err = tb.Size("textkey")
			wantErr(t, "Size textkey", err, "size", store.ErrNotFound, "not found")
			if f == FormatA {
				for _, k := range []string{"liar", "sizetext"} {
					_, err := tb.Size(k)
					wantErr(t, "Size "+k, err, "size", store.ErrCorrupt, "size column")
					_, err = tb.ReadAt(k, make([]byte, 10), 0)
					wantErr(t, "ReadAt "+k, err, "read", store.ErrCorrupt, "size column")
				}
			}
			if n, err := tb.Size("good"); err != nil || n != 5 {
				t.Errorf("Size good: %d, %v", n, err)
			}

			sizes := map[string]int64{}
			var keys []string
			if err := tb.Scan("", "", 0, func(k string, n int64) error {
				keys = append(keys, k)
				sizes[k] = n
				return nil
			}); err != nil {
				t.Fatalf("Scan: %v", err)
			}
			if want := []string{"good", "int", "liar", "real", "sizetext", "text"}; !slices.Equal(keys, want) {
				t.Errorf("Scan keys %q, want %q", keys, want)
			}
			for k, n := range map[string]int64{"good": 5, "liar": 5, "sizetext": 5, "text": int64(len("héllo"))} {
				if sizes[k] != n {
					t.Errorf("Scan size of %s: %d, want %d (the stored bytes)", k, sizes[k], n)
				}
			}
			if n, err := tb.Len(); err != nil || n != 7 {
				t.Errorf("Len: %d, %v; want 7 (every row, as KohakuVault's len())", n, err)
			}

			reported := map[string]string{}
			n, err := tb.Verify(func(k string, err error) {
				if !errors.Is(err, store.ErrCorrupt) {
					t.Errorf("Verify reports %q with %v, not ErrCorrupt", k, err)
				}
				reported[k] = err.Error()
			})
			if err != nil || n != 7 {
				t.Fatalf("Verify: %d rows, %v; want 7 and no error", n, err)
			}
			want := map[string]string{"int": "integer", "text": "text", "real": "real", "textkey": "key is stored as text"}
			if f == FormatA {
				want["liar"] = "size column"
				want["sizetext"] = "size column"
			}
			for k, text := range want {
				if !strings.Contains(reported[k], text) {
					t.Errorf("Verify on %q: %q, want it to say %q", k, reported[k], text)
				}
			}
			if _, ok := reported["good"]; ok || len(reported) != len(want) {
				t.Errorf("Verify reported %v, want exactly %v", reported, want)
			}
		})
	}
}

// TestReadAtEOFStillBare: the io.EOF of ReadAt at the end of a value
// stays bare (io.ReaderAt), while its other errors are wrapped.
func TestReadAtEOFStillBare(t *testing.T) {
	tb := openTable(t, FormatBC)
	if err := tb.Put("k", []byte("abc")); err != nil {
		t.Fatal(err)
	}
	n, err := tb.ReadAt("k", make([]byte, 10), 1)
	if n != 2 || err != io.EOF {
		t.Fatalf("ReadAt past the end: %d, %v", n, err)
	}
}
