package kohaku

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kohakuvault/kvaultfs/store"
)

// TestConcurrentWritersReader: two tables on one file (two writer
// connections, as two processes would have) write while a third reads;
// every read sees a whole value of one write, nothing is lost, nothing
// fails.
func TestConcurrentWritersReader(t *testing.T) {
	watchdog(t, 3*time.Minute)
	path := newFile(t, FormatA, true)
	open := func() *Table {
		tb, err := Open(path, Options{BusyTimeout: 30 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tb.Close() })
		return tb
	}
	w1, w2, r := open(), open(), open()
	const rounds = 30
	// A value is one writer's and one round's byte pair repeated.
	val := func(w, i int) []byte { return bytes.Repeat([]byte{byte(w + 1), byte(i)}, 100_000+i) }
	var writers, reader sync.WaitGroup
	errs := make(chan error, 4)
	for w, tb := range []*Table{w1, w2} {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for i := range rounds {
				v := val(w, i)
				k := fmt.Sprintf("w%d/%d", w, i)
				var err error
				if i%2 == 0 {
					err = tb.Put(k, v)
				} else {
					err = tb.PutReader(k, bytes.NewReader(v), int64(len(v)))
				}
				if err == nil {
					err = tb.PutReader("shared", bytes.NewReader(v), -1)
				}
				if err != nil {
					errs <- fmt.Errorf("writer %d: %w", w, err)
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	reader.Add(1)
	go func() {
		defer reader.Done()
		reads := 0
		for {
			select {
			case <-done:
				if reads == 0 {
					errs <- errors.New("reader never ran")
				}
				return
			default:
			}
			var buf bytes.Buffer
			_, err := r.GetTo("shared", &buf)
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				errs <- fmt.Errorf("reader: %w", err)
				return
			}
			if b := buf.Bytes(); len(b) > 0 && !bytes.Equal(b, bytes.Repeat(b[:2], len(b)/2)) {
				errs <- errors.New("reader: a value mixing two writes")
				return
			}
			if err := r.Scan("", "", 0, func(string, int64) error { return nil }); err != nil {
				errs <- fmt.Errorf("reader scan: %w", err)
				return
			}
			reads++
		}
	}()
	writers.Wait()
	close(done)
	reader.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for w := range 2 {
		for i := range rounds {
			got, ok := kohakuGet(t, path, FormatA, fmt.Sprintf("w%d/%d", w, i))
			if !ok {
				t.Fatalf("lost write w%d/%d", w, i)
			}
			mustEqual(t, "value", got, val(w, i))
		}
	}
}

// TestBusy: while another connection holds the write lock past the busy
// timeout, writes fail with store.ErrBusy and change nothing, and reads
// go on (WAL readers never wait for the writer).
func TestBusy(t *testing.T) {
	watchdog(t, time.Minute)
	path := newFile(t, FormatBC, true)
	tb, err := Open(path, Options{BusyTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	if err := tb.Put("k", []byte("old")); err != nil {
		t.Fatal(err)
	}
	other := rawDB(t, path)
	tx, err := other.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`INSERT INTO kv(key, value) VALUES (?1, ?2)`, []byte("lock"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"Put":       tb.Put("k", []byte("new")),
		"PutReader": tb.PutReader("k", bytes.NewReader(make([]byte, 3<<20)), 3<<20),
		"PutBatch":  tb.PutBatch([]Item{{Key: "k", Value: []byte("new")}}),
		"Delete":    tb.Delete("k"),
		"Rename":    tb.Rename("k", "l", true),
	} {
		if !errors.Is(err, store.ErrBusy) {
			t.Errorf("%s under another writer's lock: %v, want ErrBusy", name, err)
		}
	}
	if v, err := tb.Get("k"); err != nil || string(v) != "old" {
		t.Fatalf("Get while locked: %q, %v", v, err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := tb.Put("k", []byte("new")); err != nil {
		t.Fatalf("Put after the lock is gone: %v", err)
	}
}
