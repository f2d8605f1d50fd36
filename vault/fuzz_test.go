package vault

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"maps"
	"math"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// Fuzz targets (issue 8, item 17), each run briefly by CI:
//
//	go test -run '^$' -fuzz '^FuzzKeys$' -fuzztime 10s ./vault/
//	go test -run '^$' -fuzz '^FuzzChunkSpans$' -fuzztime 10s ./vault/
//	go test -run '^$' -fuzz '^FuzzExtremeOffsets$' -fuzztime 10s ./vault/
//	go test -run '^$' -fuzz '^FuzzModelTwoHandles$' -fuzztime 10s ./vault/
//
// Without -fuzz, go test runs their seed corpus as ordinary tests.

// FuzzKeys checks the mapping of keys to places: parseKey never panics;
// a path key splits into valid names that join back to the key; any
// other key (the empty one too) is binary, with a 64-hex-digit name; compareKeys is
// an order. Then the key goes through a vault: Put, Stat, Get, a listing
// and Delete agree, or Put refuses it with ErrInvalidArgument and
// nothing changes.
func FuzzKeys(f *testing.F) {
	for _, k := range []string{"a", "a/b", "video:456", "clips/2024/a.mp4", "", "/", "a//b", "./a", "a/..", "a\x00b",
		ReservedDir, ReservedDir + "/keys", "\xff\xfe", strings.Repeat("n", 255), strings.Repeat("n", 256), "a/" + strings.Repeat("x", 256), "é/ü"} {
		f.Add(k, "a/b")
	}
	v, err := Open(filepath.Join(f.TempDir(), "keys.db"), nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { v.Close() })
	f.Fuzz(func(t *testing.T, key, other string) {
		kp, err := parseKey(key)
		if err != nil {
			t.Fatalf("parseKey(%q): %v", key, err)
		}
		{
			if kp.binary == IsPathKey(key) {
				t.Fatalf("parseKey(%q).binary = %v, IsPathKey = %v", key, kp.binary, IsPathKey(key))
			}
			if kp.binary {
				if name := binaryName(key); len(name) != 64 || strings.Trim(name, "0123456789abcdef") != "" || validName(name) != nil {
					t.Fatalf("binaryName(%q) = %q", key, name)
				}
			} else {
				if joinParts(kp.parts) != key {
					t.Fatalf("parts of %q join to %q", key, joinParts(kp.parts))
				}
				for _, p := range kp.parts {
					if err := validName(p); err != nil {
						t.Fatalf("path key %q has an invalid name %q: %v", key, p, err)
					}
				}
				if kp.parts[0] == ReservedDir {
					t.Fatalf("path key %q lives in the reserved directory", key)
				}
			}
		}
		// compareKeys is an order: antisymmetric, zero only for equal keys.
		if c, d := compareKeys(key, other), compareKeys(other, key); c != -d || (c == 0) != (key == other) {
			t.Fatalf("compareKeys(%q, %q) = %d, reversed %d", key, other, c, d)
		}
		if len(key) > 4096 {
			return
		}
		roundTrip(t, v, key)
	})
}

// roundTrip puts key in v, reads it back every way and deletes it.
func roundTrip(t *testing.T, v *Vault, key string) {
	val := []byte("value of " + key)
	if err := v.Put(key, val); err != nil {
		if !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("Put(%q): %v, want success or ErrInvalidArgument", key, err)
		}
		// A path through an existing file or onto a directory: refused,
		// and nothing was stored under the key.
		if got, err := v.Get(key); err == nil && bytes.Equal(got, val) {
			t.Fatalf("Put(%q) failed but Get returns the value", key)
		}
		return
	}
	defer func() {
		if err := v.Delete(key); err != nil {
			t.Fatalf("Delete(%q): %v", key, err)
		}
		if _, err := v.Get(key); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get(%q) after Delete: %v, want ErrNotFound", key, err)
		}
	}()
	got, err := v.Get(key)
	if err != nil || !bytes.Equal(got, val) {
		t.Fatalf("Get(%q) = %q, %v", key, got, err)
	}
	in, err := v.Stat(key)
	if err != nil || in.Size != int64(len(val)) {
		t.Fatalf("Stat(%q) = size %d, %v", key, in.Size, err)
	}
	found := false
	for k, err := range v.Keys(key) {
		if err != nil {
			t.Fatalf("Keys(%q): %v", key, err)
		}
		found = found || k == key
	}
	if !found {
		t.Fatalf("Keys(%q) does not list %q", key, key)
	}
	// A path key is reachable name by name from the root, as the mount
	// finds it; a binary key lives in the reserved keys directory.
	if IsPathKey(key) {
		parent := int64(1)
		parts := strings.Split(key, "/")
		for i, p := range parts {
			c, err := v.Lookup(parent, p)
			if err != nil {
				t.Fatalf("Lookup of %q in %q: %v", p, joinParts(parts[:i]), err)
			}
			parent = c.ID
		}
		if parent != in.ID {
			t.Fatalf("%q resolves to inode %d by name, %d by Stat", key, parent, in.ID)
		}
	}
}

// FuzzChunkSpans checks the chunk-range arithmetic at any offset:
// chunksSpanned never panics, and for a range that fits in int64 it
// counts the chunks that a loop over [off, off+n) in exact arithmetic
// touches.
func FuzzChunkSpans(f *testing.F) {
	for _, c := range []struct {
		cs  uint32
		off int64
		n   uint32
	}{
		{1, 0, 1}, {16, 65535, 2}, {16, math.MaxInt64 - 1, 1}, {16, math.MaxInt64 - 65536, 65536},
		{16383, 1 << 62, 1 << 20}, {0, math.MaxInt64, 0}, {1, -1, 5}, {7, math.MaxInt64 - 10, 11},
	} {
		f.Add(c.cs, c.off, c.n)
	}
	f.Fuzz(func(t *testing.T, sel uint32, off int64, n uint32) {
		cs := int64(4096) * int64(1+sel%(maxChunkSize/4096)) // every valid chunk size
		got := chunksSpanned(cs, off, int(n))                // must not panic, whatever the input
		if off < 0 || int64(n) > math.MaxInt64-off {
			return // out of range: callers refuse it before
		}
		want := big.NewInt(0)
		if n > 0 {
			end := new(big.Int).Add(big.NewInt(off), big.NewInt(int64(n)-1))
			last := new(big.Int).Div(end, big.NewInt(cs))
			want.Sub(last, big.NewInt(off/cs)).Add(want, big.NewInt(1))
		}
		if !want.IsInt64() || got != want.Int64() {
			t.Fatalf("chunksSpanned(%d, %d, %d) = %d, want %s", cs, off, n, got, want)
		}
	})
}

// FuzzExtremeOffsets writes, reads, truncates, appends and commits at offsets up
// to math.MaxInt64 on files of small chunks, against a sparse model. An
// operation may fail only with an invalid-argument or file-too-large
// error, and then must change nothing; one that succeeds must do exactly
// what it says (no wrapped-around chunk index, no bytes never written,
// no data dropped). Reads past the end are io.EOF.
func FuzzExtremeOffsets(f *testing.F) {
	f.Add([]byte{0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 8})                               // write at MaxInt64
	f.Add([]byte{2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 1}) // truncate to MaxInt64, then read
	f.Add([]byte{3, 0xf0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 200, 3, 0, 0, 0, 0, 0, 0, 0, 0, 64})
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 99, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 99}) // data, Sync, truncate to MaxInt64, read it
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0x40, 7, 1, 0xfa, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 50})
	o := smallChunks()
	dir := f.TempDir()
	v, err := Open(filepath.Join(dir, "offsets.db"), o)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { v.Close() })
	f.Fuzz(func(t *testing.T, ops []byte) {
		const key = "extreme"
		v.Delete(key)
		file, err := v.OpenFile(key, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer file.Close()
		m := newMfile(nil)
		for len(ops) >= 10 {
			op, off, n := ops[0]%5, int64(binary.LittleEndian.Uint64(ops[1:9])), int(ops[9])
			ops = ops[10:]
			p := bytes.Repeat([]byte{op + 1}, n+1)
			switch op {
			case 0: // write
				_, err := file.WriteAt(p, off)
				if bad := checkLimitErr(t, "WriteAt", off, err); !bad {
					if off < 0 || off > math.MaxInt64-int64(len(p)) {
						t.Fatalf("WriteAt(%d bytes at %d) succeeded past the largest offset", len(p), off)
					}
					m.writeAt(p, off)
				}
			case 1: // read
				if off < 0 {
					continue
				}
				got := make([]byte, n+1)
				k, err := file.ReadAt(got, off)
				want := make([]byte, n+1)
				wn := m.readAt(want, off)
				if k != wn || !bytes.Equal(got[:k], want[:wn]) {
					t.Fatalf("ReadAt(%d bytes at %d) = %d bytes (%v), model %d (size %d); first difference at %d", n+1, off, k, err, wn, m.size, firstDiff(got[:k], want[:wn]))
				}
				if wn < n+1 && !errors.Is(err, io.EOF) {
					t.Fatalf("ReadAt past the end at %d: %v, want io.EOF", off, err)
				}
			case 2: // truncate
				err := file.Truncate(off)
				if off < 0 && err == nil {
					t.Fatalf("Truncate(%d) succeeded", off)
				}
				if bad := checkLimitErr(t, "Truncate", off, err); !bad {
					m.truncate(off)
				}
			case 4: // commit
				if err := file.Sync(); err != nil {
					t.Fatalf("Sync: %v", err)
				}
			case 3: // append
				_, at, err := file.Append(p)
				if bad := checkLimitErr(t, "Append", m.size, err); !bad {
					if m.size > math.MaxInt64-int64(len(p)) {
						t.Fatalf("Append of %d bytes at %d succeeded past the largest offset", len(p), m.size)
					}
					if at != m.size {
						t.Fatalf("Append at %d, model size %d", at, m.size)
					}
					m.writeAt(p, m.size)
				}
			}
			if got := file.Size(); got != m.size {
				t.Fatalf("after op %d at %d: Size %d, model %d", op, off, got, m.size)
			}
		}
		if err := file.Sync(); err != nil {
			t.Fatalf("Sync: %v", err)
		}
		in, err := v.Stat(key)
		if err != nil || in.Size != m.size {
			t.Fatalf("Stat after Sync: size %d, %v; model %d", in.Size, err, m.size)
		}
		// Every page the model holds reads back after the commit.
		for _, pg := range slices.Sorted(maps.Keys(m.pages)) {
			want := make([]byte, mPage)
			wn := m.readAt(want, pg*mPage)
			got := make([]byte, mPage)
			k, _ := file.ReadAt(got, pg*mPage)
			if k != wn || !bytes.Equal(got[:k], want[:wn]) {
				t.Fatalf("page at %d after Sync: %d bytes, model %d; first difference at %d", pg*mPage, k, wn, firstDiff(got[:k], want[:wn]))
			}
		}
	})
}

// checkLimitErr accepts a nil error or a refusal of an offset or size
// out of range (ErrInvalidArgument, EFBIG); it reports whether the
// operation was refused.
func checkLimitErr(t *testing.T, op string, off int64, err error) bool {
	t.Helper()
	if err == nil {
		return false
	}
	if errors.Is(err, ErrInvalidArgument) || errors.Is(err, syscall.EFBIG) {
		return true
	}
	t.Fatalf("%s at %d: %v, want success or an invalid-argument error", op, off, err)
	return true
}

// FuzzModelTwoHandles drives two Files open on one key at once, with
// writes, reads, truncates, appends (Append and O_APPEND Write), seeks,
// Sync, and closing and reopening either handle, against one byte-slice
// model: both handles see every write at once. At the end the committed
// value is the model.
func FuzzModelTwoHandles(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})
	f.Add(bytes.Repeat([]byte{0x10, 0x93, 0x21, 0x44, 0x05, 0xe6, 0x37, 0x78}, 16))
	f.Add(bytes.Repeat([]byte{0x03, 0x80, 0x02, 0x41, 0x0b, 0x09}, 20))
	o := smallChunks()
	v, err := Open(filepath.Join(f.TempDir(), "two.db"), o)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { v.Close() })
	f.Fuzz(func(t *testing.T, ops []byte) { twoHandles(t, v, ops) })
}

// twoHandles is one run of FuzzModelTwoHandles.
func twoHandles(t *testing.T, v *Vault, ops []byte) {
	{
		const key = "two/handles"
		if err := v.Put(key, nil); err != nil {
			t.Fatal(err)
		}
		var model []byte
		flags := [2]int{os.O_RDWR, os.O_RDWR | os.O_APPEND}
		var h [2]*File
		open := func(i int) {
			var err error
			if h[i], err = v.OpenFile(key, flags[i], 0); err != nil {
				t.Fatalf("open handle %d: %v", i, err)
			}
		}
		open(0)
		open(1)
		defer func() {
			for _, x := range h {
				if x != nil {
					x.Close()
				}
			}
		}()
		next := func() int {
			if len(ops) == 0 {
				return 0
			}
			b := int(ops[0])
			ops = ops[1:]
			return b
		}
		for steps := 0; len(ops) > 0 && steps < 500; steps++ {
			b := next()
			i, kind := b&1, (b>>1)%9
			file := h[i]
			// Offsets and lengths span a few 4 KiB chunks.
			off := int64(next()<<6|next()&63) % (5 * 4096)
			n := 1 + (next()<<4|next()&15)%9000 // an empty write changes nothing; POSIX says so, not a model
			p := bytes.Repeat([]byte{byte(steps%250 + 1)}, n)
			switch kind {
			case 0: // WriteAt
				if _, err := file.WriteAt(p, off); err != nil {
					t.Fatalf("step %d: handle %d WriteAt(%d at %d): %v", steps, i, n, off, err)
				}
				model = resize(model, max(int64(len(model)), off+int64(n)))
				copy(model[off:], p)
			case 1: // ReadAt
				got := make([]byte, n)
				k, err := file.ReadAt(got, off)
				want := model[min(off, int64(len(model))):min(off+int64(n), int64(len(model)))]
				if k != len(want) || !bytes.Equal(got[:k], want) {
					t.Fatalf("step %d: handle %d ReadAt(%d at %d) = %d bytes (%v), model %d; first difference at %d", steps, i, n, off, k, err, len(want), firstDiff(got[:k], want))
				}
				if k < n && !errors.Is(err, io.EOF) {
					t.Fatalf("step %d: short ReadAt without io.EOF: %v", steps, err)
				}
			case 2: // Truncate
				size := off
				if err := file.Truncate(size); err != nil {
					t.Fatalf("step %d: handle %d Truncate(%d): %v", steps, i, size, err)
				}
				model = resize(model, size)
			case 3: // Append
				_, at, err := file.Append(p)
				if err != nil {
					t.Fatalf("step %d: handle %d Append: %v", steps, i, err)
				}
				if at != int64(len(model)) {
					t.Fatalf("step %d: handle %d Append went to %d, model size %d", steps, i, at, len(model))
				}
				model = append(model, p...)
			case 4: // Write at the handle's offset (O_APPEND on handle 1)
				at := int64(len(model))
				if flags[i]&os.O_APPEND == 0 {
					cur, err := file.Seek(0, io.SeekCurrent)
					if err != nil {
						t.Fatal(err)
					}
					at = cur
				}
				if _, err := file.Write(p); err != nil {
					t.Fatalf("step %d: handle %d Write: %v", steps, i, err)
				}
				model = resize(model, max(int64(len(model)), at+int64(n)))
				copy(model[at:], p)
			case 5: // Seek and Read
				if _, err := file.Seek(off, io.SeekStart); err != nil {
					t.Fatal(err)
				}
				got := make([]byte, n)
				k, err := io.ReadFull(file, got)
				want := model[min(off, int64(len(model))):min(off+int64(n), int64(len(model)))]
				if k != len(want) || !bytes.Equal(got[:k], want) {
					t.Fatalf("step %d: handle %d Read(%d at %d) = %d bytes (%v), model %d", steps, i, n, off, k, err, len(want))
				}
			case 6: // Sync or Flush
				sync := file.Flush
				if n%2 == 0 {
					sync = file.Sync
				}
				if err := sync(); err != nil {
					t.Fatalf("step %d: handle %d sync: %v", steps, i, err)
				}
			case 7: // close and reopen
				if err := file.Close(); err != nil {
					t.Fatalf("step %d: handle %d Close: %v", steps, i, err)
				}
				open(i)
			case 8: // Size, and the committed state as another reader sees it
				if got := file.Size(); got != int64(len(model)) {
					t.Fatalf("step %d: handle %d Size %d, model %d", steps, i, got, len(model))
				}
			}
			if got := h[1-i].Size(); got != int64(len(model)) {
				t.Fatalf("step %d: after kind %d on handle %d, the other handle's Size is %d, model %d", steps, kind, i, got, len(model))
			}
		}
		for i := range h {
			if err := h[i].Close(); err != nil {
				t.Fatalf("close handle %d: %v", i, err)
			}
		}
		h = [2]*File{}
		got, err := v.Get(key)
		if err != nil || !bytes.Equal(got, model) {
			t.Fatalf("after closing both: Get = %d bytes (%v), model %d; first difference at %d", len(got), err, len(model), firstDiff(got, model))
		}
	}
}

// resize returns b cut or zero-extended to n bytes.
func resize(b []byte, n int64) []byte {
	if n <= int64(len(b)) {
		return b[:n]
	}
	return append(b, make([]byte, n-int64(len(b)))...)
}
