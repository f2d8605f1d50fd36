package migrate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/kohakuvault/kvaultfs/internal/kohakutest"
)

// TestProgress checks the progress reports: keys and bytes never go
// back, totals stay fixed, and the last report is everything done.
func TestProgress(t *testing.T) {
	watchdog(t, time.Minute)
	src := kohakutest.CopyFixture(t, "format-c.db")
	kohakutest.DeleteLikeKohaku(t, src, "kv", []byte(""))
	want := kohakutest.ReadAll(t, src, "kv")
	var total int64
	for _, v := range want {
		total += int64(len(v))
	}
	var reports []Progress
	o := Options{Progress: func(p Progress) { reports = append(reports, p) }}
	if _, err := Forward(context.Background(), src, filepath.Join(t.TempDir(), "n.db"), o); err != nil {
		t.Fatal(err)
	}
	if len(reports) < len(want) {
		t.Fatalf("%d reports for %d keys", len(reports), len(want))
	}
	for i, p := range reports {
		if p.TotalKeys != int64(len(want)) || p.TotalBytes != total {
			t.Fatalf("report %d: totals %d keys %d bytes, want %d and %d", i, p.TotalKeys, p.TotalBytes, len(want), total)
		}
		if i > 0 && (p.Keys < reports[i-1].Keys || p.Bytes < reports[i-1].Bytes) {
			t.Fatalf("report %d went back: %+v after %+v", i, p, reports[i-1])
		}
		if p.Bytes > p.TotalBytes || p.Keys > p.TotalKeys {
			t.Fatalf("report %d past the totals: %+v", i, p)
		}
	}
	if last := reports[len(reports)-1]; last.Keys != last.TotalKeys || last.Bytes != last.TotalBytes {
		t.Errorf("last report %+v is not complete", last)
	}
}

// TestInterrupt cancels runs part way, in both directions, and checks that
// the run stops with ErrInterrupted, every key of the destination holds
// either nothing (or its old value) or exactly the new value, and a later
// run finishes the copy without copying again what was done.
func TestInterrupt(t *testing.T) {
	watchdog(t, time.Minute)
	dir := t.TempDir()
	native := filepath.Join(dir, "native.db")
	want := map[string][]byte{}
	for i := range 12 {
		want[fmt.Sprintf("clips/%02d.bin", i)] = bytes.Repeat([]byte{byte(i + 1)}, 200<<10+i)
	}
	newNative(t, native, want)

	for _, dir := range []string{"back", "forward"} {
		t.Run(dir, func(t *testing.T) {
			var src, dst string
			run, read := Back, func() map[string][]byte { return kohakutest.ReadAll(t, dst, "kv") }
			if dir == "back" {
				src, dst = native, filepath.Join(t.TempDir(), "media.db")
			} else {
				src = filepath.Join(t.TempDir(), "media.db")
				if _, err := Back(context.Background(), native, src, Options{}); err != nil {
					t.Fatal(err)
				}
				dst = filepath.Join(t.TempDir(), "native.db")
				run, read = Forward, func() map[string][]byte { return readNative(t, dst) }
			}
			// Cancel in the middle of the 4th key's value (progress inside a
			// value comes every progressStep bytes, so cancel on the report
			// of the 3rd key's end: the 4th key starts with a cancelled
			// context and must not be written).
			ctx, cancel := context.WithCancel(context.Background())
			o := Options{Progress: func(p Progress) {
				if p.Keys == 3 {
					cancel()
				}
			}}
			res, err := run(ctx, src, dst, o)
			if !errors.Is(err, ErrInterrupted) {
				t.Fatalf("error %v, want ErrInterrupted", err)
			}
			got := read()
			if len(got) != 3 || res.Copied != 3 {
				t.Errorf("interrupted after 3 keys: %d keys in the destination, result %+v", len(got), res)
			}
			for k, v := range got {
				if !bytes.Equal(v, want[k]) {
					t.Errorf("%q: %d bytes after the interruption, neither absent nor the new value", k, len(v))
				}
			}
			res, err = run(context.Background(), src, dst, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if res.Copied != int64(len(want)-3) || res.Unchanged != 3 {
				t.Errorf("the run after the interruption: %+v, want %d copied and 3 unchanged", res, len(want)-3)
			}
			sameMaps(t, "after the second run", read(), want)
		})
	}
}

// TestInterruptMidValue cancels while a value is being streamed and checks
// the destination keeps that key's old value whole.
func TestInterruptMidValue(t *testing.T) {
	watchdog(t, time.Minute)
	dir := t.TempDir()
	native := filepath.Join(dir, "native.db")
	defer func(old int64) { progressStep = old }(progressStep)
	progressStep = 256 << 10
	big := bytes.Repeat([]byte("new!"), 3<<18) // 3 MiB, 12 progress steps
	newNative(t, native, map[string][]byte{"big.bin": big})
	dst := kohakutest.CopyFixture(t, "format-b.db")
	old := []byte("the old value of big.bin")
	kohakutest.PutLikeKohaku(t, dst, "kv", kohakutest.FormatBC, []byte("big.bin"), old)

	ctx, cancel := context.WithCancel(context.Background())
	o := Options{Progress: func(p Progress) {
		if p.Bytes > 0 && p.Keys == 0 {
			cancel() // the first report inside the value
		}
	}}
	_, err := Back(ctx, native, dst, o)
	if !errors.Is(err, ErrInterrupted) {
		t.Fatalf("error %v, want ErrInterrupted", err)
	}
	if got, _ := kohakutest.GetLikeKohaku(t, dst, "kv", []byte("big.bin")); !bytes.Equal(got, old) {
		t.Errorf("big.bin holds %d bytes after an interrupted copy, want its old value", len(got))
	}
}
