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
)

// memStore is a one-key store whose reads and writes can fail, to drive
// copyValue and verify through their error paths.
type memStore struct {
	value  []byte
	failAt int64 // GetTo fails after this many bytes (-1: never)
	putErr error // PutReader fails with this after reading a little
	stored []byte
}

var errBroken = errors.New("broken disk")

func (m *memStore) GetTo(_ string, w io.Writer) (int64, error) {
	var n int64
	for off := 0; off < len(m.value); off += 1000 {
		if m.failAt >= 0 && n >= m.failAt {
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
	d, err := copyValue(ctx, src, dst, "k", int64(len(value)), nil)
	if err != nil || !bytes.Equal(dst.stored, value) || d.sum != sha256.Sum256(value) || d.n != int64(len(value)) {
		t.Fatalf("copy: %v, %d bytes stored, digest %x", err, len(dst.stored), d.sum)
	}

	src = &memStore{value: value, failAt: 50_000}
	dst = &memStore{}
	_, err = copyValue(ctx, src, dst, "k", int64(len(value)), nil)
	if !errors.Is(err, errBroken) || !strings.Contains(err.Error(), "read source") || dst.stored != nil {
		t.Errorf("a failing source: %v (stored %d bytes), want a read source error and nothing stored", err, len(dst.stored))
	}

	src = &memStore{value: value, failAt: -1}
	dst = &memStore{putErr: errors.New("disk full")}
	_, err = copyValue(ctx, src, dst, "k", int64(len(value)), nil)
	if err == nil || err.Error() != "disk full" {
		t.Errorf("a failing destination: %v, want its own error", err)
	}

	// A source shorter than the size it announced.
	src = &memStore{value: value, failAt: -1}
	dst = &memStore{}
	if _, err := copyValue(ctx, src, dst, "k", int64(len(value))+1, nil); err == nil {
		t.Error("a copy of fewer bytes than announced succeeded")
	}

	ctx2, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := copyValue(ctx2, &memStore{value: value, failAt: -1}, &memStore{}, "k", int64(len(value)), nil); !errors.Is(err, context.Canceled) {
		t.Errorf("a cancelled copy: %v, want context.Canceled", err)
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
