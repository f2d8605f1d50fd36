package migrate

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kohakuvault/kvaultfs/internal/kohakutest"
	"github.com/kohakuvault/kvaultfs/vault"
)

// The tests of this file change the source while a run reads it, as
// KohakuVault (or another kvaultfs) writing the same file would.

// kohakuSource makes a KohakuVault file as KohakuVault 0.8 makes it
// (format C, WAL, table kv) holding kv, in dir.
func kohakuSource(t *testing.T, dir string, kv map[string][]byte) string {
	t.Helper()
	seed := filepath.Join(dir, "seed.db")
	newNative(t, seed, kv)
	src := filepath.Join(dir, "media.db")
	if _, err := Back(context.Background(), seed, src, Options{}); err != nil {
		t.Fatal(err)
	}
	return src
}

// withHook sets testHook for the rest of the test.
func withHook(t *testing.T, fn func(event, key string)) {
	testHook = fn
	t.Cleanup(func() { testHook = nil })
}

// smallSteps makes progress reports come every 1 MiB within a value.
func smallSteps(t *testing.T) {
	old := progressStep
	progressStep = 1 << 20
	t.Cleanup(func() { progressStep = old })
}

// putNative stores key=value in the native vault at path, as another
// program writing the vault would.
func putNative(t *testing.T, path, key string, value []byte) {
	v, err := vault.Open(path, nil)
	if err != nil {
		t.Error(err)
		return
	}
	defer v.Close()
	if value == nil {
		err = v.Delete(key)
	} else {
		err = v.Put(key, value)
	}
	if err != nil {
		t.Errorf("write %q into the source: %v", key, err)
	}
}

// TestForwardSourceChangesDuringCompare: on a second run, KohakuVault
// deletes one key and rewrites another to another length while the run
// compares them (same size in the destination, other bytes). The deleted
// key is passed over, the rewritten one copied as it now is, and the run
// succeeds.
func TestForwardSourceChangesDuringCompare(t *testing.T) {
	watchdog(t, time.Minute)
	dir := t.TempDir()
	big := bytes.Repeat([]byte{1}, 4<<20)
	src := kohakuSource(t, dir, map[string][]byte{"a.bin": big, "b.bin": big, "c.bin": []byte("c")})
	dst := filepath.Join(dir, "copy.db")
	if _, err := Forward(context.Background(), src, dst, Options{}); err != nil {
		t.Fatal(err)
	}
	// Same sizes, other bytes: the second run compares both, then copies.
	other := bytes.Repeat([]byte{2}, 4<<20)
	kohakutest.PutLikeKohaku(t, src, "kv", kohakutest.FormatBC, []byte("a.bin"), other)
	kohakutest.PutLikeKohaku(t, src, "kv", kohakutest.FormatBC, []byte("b.bin"), other)
	smallSteps(t)
	rewritten := []byte("b.bin, rewritten shorter")
	done := map[string]bool{}
	o := Options{Progress: func(p Progress) {
		if p.Bytes == 0 || done[p.Key] {
			return
		}
		switch p.Key {
		case "a.bin":
			done[p.Key] = true
			if !kohakutest.DeleteLikeKohaku(t, src, "kv", []byte("a.bin")) {
				t.Error("a.bin was not in the source to delete")
			}
		case "b.bin":
			done[p.Key] = true
			kohakutest.PutLikeKohaku(t, src, "kv", kohakutest.FormatBC, []byte("b.bin"), rewritten)
		}
	}}
	res, err := Forward(context.Background(), src, dst, o)
	if err != nil {
		t.Fatalf("KohakuVault deleting and rewriting keys during the run made it fail: %v (result %+v)", err, res)
	}
	if !done["a.bin"] || !done["b.bin"] {
		t.Fatalf("the source was not changed during the comparisons: %v", done)
	}
	got := readNative(t, dst)
	if !bytes.Equal(got["a.bin"], big) {
		t.Errorf("a.bin, deleted in the source during the run, holds %d bytes in the destination, want its old value", len(got["a.bin"]))
	}
	if !bytes.Equal(got["b.bin"], rewritten) {
		t.Errorf("b.bin holds %d bytes, want the value it was rewritten to", len(got["b.bin"]))
	}
	if res.Copied != 1 || res.Unchanged != 1 || res.Vanished != 1 || res.Skipped != 0 {
		t.Errorf("result %+v, want 1 copied (b.bin), 1 unchanged (c.bin), 1 vanished (a.bin)", res)
	}
	if s := res.Summary(); !strings.Contains(s, "1 key deleted in the source during the run") {
		t.Errorf("summary %q does not count a.bin", s)
	}
}

// TestForwardSourceKeepsChanging: a key KohakuVault rewrites to another
// length before every attempt to copy it is skipped after a few attempts
// and named in an ErrSkipped error; the other keys are copied.
func TestForwardSourceKeepsChanging(t *testing.T) {
	watchdog(t, time.Minute)
	dir := t.TempDir()
	src := kohakuSource(t, dir, map[string][]byte{"a.bin": []byte("a"), "b.bin": []byte("b")})
	attempts := 0
	withHook(t, func(event, key string) {
		if event == "copy" && key == "a.bin" {
			attempts++
			kohakutest.PutLikeKohaku(t, src, "kv", kohakutest.FormatBC, []byte("a.bin"), bytes.Repeat([]byte("a"), 10+attempts))
		}
	})
	dst := filepath.Join(dir, "copy.db")
	res, err := Forward(context.Background(), src, dst, Options{})
	if !errors.Is(err, ErrSkipped) || !strings.Contains(err.Error(), `"a.bin" (rewritten`) {
		t.Fatalf("error %v, want ErrSkipped naming a.bin", err)
	}
	if attempts != copyAttempts {
		t.Errorf("%d attempts to copy a.bin, want %d", attempts, copyAttempts)
	}
	if res.Copied != 1 || res.Skipped != 1 || res.Vanished != 0 {
		t.Errorf("result %+v, want 1 copied, 1 skipped", res)
	}
	got := readNative(t, dst)
	if !bytes.Equal(got["b.bin"], []byte("b")) {
		t.Errorf("b.bin holds %q, want it copied", got["b.bin"])
	}
	if _, ok := got["a.bin"]; ok {
		t.Errorf("a.bin, skipped, holds %q in the destination", got["a.bin"])
	}
}

// TestBackSourceChanges: the native vault copied back is written by
// another program during the run: a key deleted while it is compared is
// passed over, a key rewritten to another length just before its copy is
// copied as it now is, a key rewritten before every attempt is skipped
// and named in an ErrSkipped error; the rest is copied.
func TestBackSourceChanges(t *testing.T) {
	watchdog(t, time.Minute)
	dir := t.TempDir()
	native := filepath.Join(dir, "native.db")
	big := bytes.Repeat([]byte{1}, 4<<20)
	newNative(t, native, map[string][]byte{"a.bin": big, "c.bin": []byte("c"), "d.bin": []byte("d"), "e.bin": []byte("e")})
	dst := filepath.Join(dir, "media.db")
	if _, err := Back(context.Background(), native, dst, Options{}); err != nil {
		t.Fatal(err)
	}
	// Same sizes, other bytes: compared, then copied, on the next run.
	putNative(t, native, "a.bin", bytes.Repeat([]byte{2}, 4<<20))
	putNative(t, native, "c.bin", []byte("C"))
	putNative(t, native, "d.bin", []byte("D"))
	smallSteps(t)
	deleted := false
	o := Options{Progress: func(p Progress) {
		if p.Key == "a.bin" && p.Bytes > 0 && !deleted {
			deleted = true
			putNative(t, native, "a.bin", nil)
		}
	}}
	cAttempts, dAttempts := 0, 0
	withHook(t, func(event, key string) {
		switch {
		case event != "copy":
		case key == "c.bin":
			if cAttempts++; cAttempts == 1 {
				putNative(t, native, "c.bin", []byte("c, rewritten longer"))
			}
		case key == "d.bin":
			dAttempts++
			putNative(t, native, "d.bin", bytes.Repeat([]byte("d"), 10+dAttempts))
		}
	})
	res, err := Back(context.Background(), native, dst, o)
	if res.Copied != 1 || res.Unchanged != 1 || res.Vanished != 1 || res.Skipped != 1 {
		t.Errorf("result %+v, want 1 copied (c.bin), 1 unchanged (e.bin), 1 vanished (a.bin), 1 skipped (d.bin)", res)
	}
	if dAttempts != copyAttempts || cAttempts != 2 {
		t.Errorf("%d attempts at c.bin, %d at d.bin, want 2 and %d", cAttempts, dAttempts, copyAttempts)
	}
	if !errors.Is(err, ErrSkipped) || !strings.Contains(err.Error(), `"d.bin" (`) {
		t.Fatalf("error %v, want ErrSkipped naming d.bin", err)
	}
	for _, k := range []string{"a.bin", "c.bin", "e.bin"} {
		if strings.Contains(err.Error(), `"`+k+`"`) {
			t.Errorf("error %v names %s", err, k)
		}
	}
	if !deleted {
		t.Fatal("a.bin was not deleted during its comparison")
	}
	got := kohakutest.ReadAll(t, dst, "kv")
	if !bytes.Equal(got["a.bin"], big) {
		t.Errorf("a.bin, deleted in the source during the run, holds %d bytes, want its old value", len(got["a.bin"]))
	}
	if want := []byte("c, rewritten longer"); !bytes.Equal(got["c.bin"], want) {
		t.Errorf("c.bin holds %q, want %q", got["c.bin"], want)
	}
	if !bytes.Equal(got["d.bin"], []byte("d")) || !bytes.Equal(got["e.bin"], []byte("e")) {
		t.Errorf("d.bin %q, e.bin %q, want d (skipped, left as it was) and e", got["d.bin"], got["e.bin"])
	}
}

// TestForwardCancelAfterStore: a cancel that comes once a value is stored
// in the destination still gives that key its mode and mtime, so that the
// next run, which finds the value unchanged, leaves a right copy.
func TestForwardCancelAfterStore(t *testing.T) {
	watchdog(t, time.Minute)
	dir := t.TempDir()
	want := map[string][]byte{"a.bin": []byte("first"), "b.bin": []byte("second")}
	src := kohakuSource(t, dir, want)
	setOld(t, src)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	withHook(t, func(event, key string) {
		if event == "stored" && key == "a.bin" {
			cancel()
		}
	})
	dst := filepath.Join(dir, "copy.db")
	if _, err := Forward(ctx, src, dst, Options{}); !errors.Is(err, ErrInterrupted) {
		t.Fatalf("error %v, want ErrInterrupted", err)
	}
	checkMeta(t, dst, map[string][]byte{"a.bin": nil})
	testHook = nil
	res, err := Forward(context.Background(), src, dst, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Unchanged != 1 || res.Copied != 1 {
		t.Errorf("the run after the cancel: %+v, want a.bin unchanged, b.bin copied", res)
	}
	sameMaps(t, "after the second run", readNative(t, dst), want)
	checkMeta(t, dst, want)
}
