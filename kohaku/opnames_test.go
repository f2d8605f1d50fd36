package kohaku

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/mattn/go-sqlite3"

	"github.com/kohakuvault/kvaultfs/store"
)

// opOf returns the operation an error names (its outermost *store.Error).
func opOf(err error) string {
	var se *store.Error
	if !errors.As(err, &se) {
		return "(not a store.Error)"
	}
	return se.Op
}

// TestOpNames: every exported method wraps its errors as a *store.Error
// naming its own operation, also when the error comes from another
// method it calls, and also for the empty key (a key like any other).
func TestOpNames(t *testing.T) {
	tb := openTable(t, FormatBC)
	bad := append([]byte{0x89, 0x4B}, make([]byte, 20)...) // not a valid header
	checks := map[string]error{
		"check value": tb.CheckValue(bad),
		"check put":   tb.CheckPut("k", bad),
		"check size":  CheckSize("k", MaxValueSize),
	}
	// PutReader of a small value goes through Put's code: its errors must
	// still name PutReader, for the empty key too. SQLITE_TOOBIG under a
	// lowered limit is such an error.
	c, err := tb.w.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c.Raw(func(dc any) error { dc.(*sqlite3.SQLiteConn).SetLimit(sqlite3.SQLITE_LIMIT_LENGTH, 1000); return nil })
	c.Close()
	checks["put reader"] = tb.PutReader("", bytes.NewReader(make([]byte, 2000)), 2000)
	for op, err := range checks {
		if opOf(err) != op {
			t.Errorf("%s: %v names op %q", op, err, opOf(err))
		}
	}

	tb.Close()
	closed := map[string]error{
		"get":          func() error { _, err := tb.Get("k"); return err }(),
		"get to":       func() error { _, err := tb.GetTo("k", io.Discard); return err }(),
		"read":         func() error { _, err := tb.ReadAt("k", make([]byte, 1), 0); return err }(),
		"exists":       func() error { _, err := tb.Exists("k"); return err }(),
		"size":         func() error { _, err := tb.Size("k"); return err }(),
		"len":          func() error { _, err := tb.Len(); return err }(),
		"scan":         tb.Scan("", "", 0, func(string, int64) error { return nil }),
		"put":          tb.Put("k", []byte("v")),
		"put batch":    tb.PutBatch([]Item{{Key: "k", Value: []byte("v")}}),
		"put reader":   tb.PutReader("k", bytes.NewReader([]byte("v")), 1),
		"delete":       tb.Delete("k"),
		"rename":       tb.Rename("k", "l", false),
		"optimize":     tb.Optimize(),
		"data version": func() error { _, err := tb.DataVersion(); return err }(),
		"sync":         tb.Sync(),
		"verify":       func() error { _, err := tb.Verify(func(string, error) {}); return err }(),
	}
	for op, err := range closed {
		if !errors.Is(err, store.ErrClosed) || opOf(err) != op {
			t.Errorf("%s on a closed table: %v (op %q), want ErrClosed named %q", op, err, opOf(err), op)
		}
	}
}
