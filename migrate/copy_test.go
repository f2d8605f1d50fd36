package migrate

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/kohakuvault/kvaultfs/store"
)

// memStore is a one-key store whose reads and writes can fail, to drive
// copyValue and verify through their error paths.
type memStore struct {
	value   []byte
	failAt  int64 // GetTo fails after this many bytes (-1: never)
	failErr error // what GetTo fails with (errBroken if nil)
	putErr  error // PutReader fails with this after reading a little
	// afterPut, if set, is called once PutReader has stored the value.
	afterPut func()
	stored   []byte
}

var errBroken = errors.New("broken disk")

func (m *memStore) GetTo(_ string, w io.Writer) (int64, error) {
	var n int64
	for off := 0; off < len(m.value); off += 1000 {
		if m.failAt >= 0 && n >= m.failAt {
			if m.failErr != nil {
				return n, m.failErr
			}
			return n, errBroken
		}
		k, err := w.Write(m.value[off:min(off+1000, len(m.value))])
		n += int64(k)
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (m *memStore) PutReader(_ string, r io.Reader, size int64) error {
	if m.putErr != nil {
		io.CopyN(io.Discard, r, 10)
		return m.putErr // stops reading: the source must not block
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if int64(len(data)) != size {
		return errors.New("size mismatch")
	}
	m.stored = data
	if m.afterPut != nil {
		m.afterPut()
	}
	return nil
}

// TestCopyValueErrors checks that a failing source or destination makes
// copyValue fail with the right side named, without hanging.
func TestCopyValueErrors(t *testing.T) {
	watchdog(t, 30*time.Second)
	value := bytes.Repeat([]byte("abc"), 100_000)
	ctx := context.Background()

	src := &memStore{value: value, failAt: -1}
	dst := &memStore{}
	d, stored, err := copyValue(ctx, src, dst, "k", int64(len(value)), nil)
	if err != nil || !stored || !bytes.Equal(dst.stored, value) || d.sum != sha256.Sum256(value) || d.n != int64(len(value)) {
		t.Fatalf("copy: %v, %d bytes stored, digest %x", err, len(dst.stored), d.sum)
	}

	src = &memStore{value: value, failAt: 50_000}
	dst = &memStore{}
	_, stored, err = copyValue(ctx, src, dst, "k", int64(len(value)), nil)
	if stored || !errors.Is(err, errBroken) || !strings.Contains(err.Error(), "read source") || dst.stored != nil {
		t.Errorf("a failing source: %v (stored %d bytes), want a read source error and nothing stored", err, len(dst.stored))
	}

	src = &memStore{value: value, failAt: -1}
	dst = &memStore{putErr: errors.New("disk full")}
	_, stored, err = copyValue(ctx, src, dst, "k", int64(len(value)), nil)
	if stored || err == nil || err.Error() != "disk full" || errors.Is(err, errSourceChanged) {
		t.Errorf("a failing destination: %v, want its own error", err)
	}

	// A source value that is no longer the size it had when sized, as
	// another program rewriting it makes it: shorter or longer.
	for _, size := range []int64{int64(len(value)) + 1, int64(len(value)) - 1, 10} {
		src = &memStore{value: value, failAt: -1}
		dst = &memStore{}
		if _, stored, err := copyValue(ctx, src, dst, "k", size, nil); stored || !errors.Is(err, errSourceChanged) {
			t.Errorf("a copy of %d bytes announced as %d: %v (stored %v), want errSourceChanged", len(value), size, err, stored)
		}
	}

	// A source that no longer holds the key, or a native vault's value
	// rewritten during the read.
	for _, cause := range []error{store.ErrNotFound, store.ErrChanged} {
		src = &memStore{value: value, failAt: 0, failErr: cause}
		want := errSourceGone
		if cause == store.ErrChanged {
			want = errSourceChanged
		}
		if _, _, err := copyValue(ctx, src, &memStore{}, "k", int64(len(value)), nil); !errors.Is(err, want) {
			t.Errorf("a source failing with %v: %v, want %v", cause, err, want)
		}
	}

	ctx2, cancel := context.WithCancel(ctx)
	cancel()
	if _, stored, err := copyValue(ctx2, &memStore{value: value, failAt: -1}, &memStore{}, "k", int64(len(value)), nil); stored || !errors.Is(err, context.Canceled) {
		t.Errorf("a cancelled copy: %v (stored %v), want context.Canceled, nothing stored", err, stored)
	}

	// Cancelled once the destination has committed the value: stored,
	// with the digest of what it holds, and the context's error.
	ctx3, cancel3 := context.WithCancel(ctx)
	defer cancel3()
	dst = &memStore{afterPut: cancel3}
	d, stored, err = copyValue(ctx3, &memStore{value: value, failAt: -1}, dst, "k", int64(len(value)), nil)
	if !stored || !errors.Is(err, context.Canceled) || d.sum != sha256.Sum256(value) || !bytes.Equal(dst.stored, value) {
		t.Errorf("a copy cancelled after the commit: %v, stored %v, digest %x", err, stored, d.sum)
	}
}

// TestVerifyMismatch checks that a destination whose bytes differ from
// the source's digest is ErrMismatch naming the key.
func TestVerifyMismatch(t *testing.T) {
	watchdog(t, 30*time.Second)
	want := digest{sum: sha256.Sum256([]byte("source bytes")), n: 12}
	if err := verify(context.Background(), &memStore{value: []byte("source bytes"), failAt: -1}, "k", want); err != nil {
		t.Errorf("equal bytes: %v", err)
	}
	err := verify(context.Background(), &memStore{value: []byte("source bytez"), failAt: -1}, "clip.mp4", want)
	if !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), `"clip.mp4"`) {
		t.Errorf("different bytes: %v, want ErrMismatch naming the key", err)
	}
}
