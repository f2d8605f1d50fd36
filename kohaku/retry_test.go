package kohaku

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/kohakuvault/kvaultfs/store"
)

// TestBusyRetried: another connection holds the write lock for longer
// than busy_timeout (100 ms) but shorter than the retries (4, from 100 ms
// doubling: about 2 s in all). Every write waits it out and succeeds,
// holding no connection while it sleeps; with no retries it fails busy.
func TestBusyRetried(t *testing.T) {
	watchdog(t, 2*time.Minute)
	path := newFile(t, FormatBC, true)
	tb, err := Open(path, Options{BusyTimeout: 100 * time.Millisecond, BackoffBase: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	if err := tb.Put("k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	other := rawDB(t, path)
	ops := []struct {
		name string
		fn   func() error
	}{
		{"Put", func() error { return tb.Put("k", []byte("new")) }},
		{"PutReader", func() error { return tb.PutReader("big", bytes.NewReader(make([]byte, 3<<20)), 3<<20) }},
		{"PutBatch", func() error { return tb.PutBatch([]Item{{Key: "b", Value: []byte("x")}}) }},
		{"Rename", func() error { return tb.Rename("b", "c", true) }},
		{"Delete", func() error { return tb.Delete("c") }},
	}
	for _, op := range ops {
		tx, err := other.Begin()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(`INSERT INTO kv(key, value) VALUES (?1, ?2)`, []byte("lock"), []byte("x")); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- op.fn() }()
		time.Sleep(600 * time.Millisecond)
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Errorf("%s while another writer held the lock for 600 ms: %v", op.name, err)
		}
	}
	if v, err := tb.Get("k"); err != nil || string(v) != "new" {
		t.Fatalf("Get: %q, %v", v, err)
	}

	// Retries < 0: no retry, busy after busy_timeout alone.
	none, err := Open(path, Options{BusyTimeout: 100 * time.Millisecond, Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer none.Close()
	tx, err := other.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec(`INSERT INTO kv(key, value) VALUES (?1, ?2)`, []byte("lock"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := none.Put("k", []byte("z")); !errors.Is(err, store.ErrBusy) {
		t.Fatalf("Put with Retries -1 under a held lock: %v, want ErrBusy", err)
	}
}

// TestRetryOptions: out-of-range Retries and BackoffBase are refused.
func TestRetryOptions(t *testing.T) {
	path := newFile(t, FormatBC, true)
	for _, o := range []Options{{Retries: 31}, {BackoffBase: -time.Millisecond}, {BackoffBase: 2 * time.Minute}} {
		if tb, err := Open(path, o); !errors.Is(err, store.ErrInvalidArgument) {
			if err == nil {
				tb.Close()
			}
			t.Errorf("Open with %+v: %v, want ErrInvalidArgument", o, err)
		}
	}
}
