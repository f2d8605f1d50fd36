package vault

import (
	"testing"
	"time"
)

// A panic inside a write transaction, recovered by a caller, must not
// leave the single writer connection inside BEGIN IMMEDIATE: the next
// write has to go through.
func TestUpdatePanicRollsBack(t *testing.T) {
	hangWatchdog(t, 30*time.Second)
	v := openTest(t, nil)
	mustPut(t, v, "before", []byte("x"))

	func() {
		defer func() {
			if r := recover(); r == nil {
				t.Fatal("the panic did not reach the caller")
			}
		}()
		v.update("test", "", func(t *tx) error {
			if _, err := t.Exec(v.sql(`INSERT INTO {t}_meta (key, value) VALUES ('panicked', 1)`)); err != nil {
				return err
			}
			panic("fn panics mid-transaction")
		})
	}()

	done := make(chan error, 1)
	go func() { done <- v.Put("after", []byte("y")) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Put after a recovered panic: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Put after a recovered panic did not return within 10 s: the writer connection is still inside the panicked transaction")
	}
	if got := mustGet(t, v, "after"); string(got) != "y" {
		t.Fatalf("Get(after) = %q", got)
	}
	var n int
	if err := v.r.QueryRow(v.sql(`SELECT count(*) FROM {t}_meta WHERE key = 'panicked'`)).Scan(&n); err != nil || n != 0 {
		t.Fatalf("the panicked transaction's row: count %d, %v; want rolled back", n, err)
	}
}
