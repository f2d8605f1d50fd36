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
