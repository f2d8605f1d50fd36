package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/kohakuvault/kvaultfs/kohaku"
)

// piece is the size of one random read.
const piece = 1 << 20

// result prints one figure.
func result(job, variant string, value float64, unit string) {
	fmt.Printf("R %d %s %s %.6g %s\n", *rep, job, variant, value, unit)
}

// note prints a remark that the report repeats under the table.
func note(format string, a ...any) { fmt.Printf("N %s\n", fmt.Sprintf(format, a...)) }

func mbps(n int64, d time.Duration) float64 { return float64(n) / 1e6 / d.Seconds() }

// block is 1 MiB of pseudo-random bytes that the value repeats. Its first
// bytes are not KohakuVault's header magic (89 4B), which a KohakuVault
// table refuses to store; that is checked once, in put.
var block = sync.OnceValue(func() []byte {
	b := make([]byte, 1<<20)
	x := uint64(0x6b76)
	for i := 0; i < len(b); i += 8 {
		x += 0x9e3779b97f4a7c15
		z := x
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		binary.LittleEndian.PutUint64(b[i:], z^(z>>31))
	}
	return b
})

// blockReader yields n bytes by repeating block.
type blockReader struct {
	left int64
	off  int
}

func (r *blockReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	b := block()
	n := copy(p[:min(int64(len(p)), r.left)], b[r.off:])
	r.off = (r.off + n) % len(b)
	r.left -= int64(n)
	return n, nil
}

// expected fills p with the value's bytes at off, for checking reads.
func expected(p []byte, off int64) {
	b := block()
	for i := 0; i < len(p); {
		i += copy(p[i:], b[(off+int64(i))%int64(len(b)):])
	}
}

// discard is io.Discard without ReadFrom, so nobody chooses a buffer
// size for the reader.
type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// dropCaches writes dirty pages out and empties the kernel's page cache,
// reporting false (with a note) when it cannot: then "cold" is warm.
func dropCaches() bool {
	syncAll()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		note("cannot drop the page cache (%v): cold figures are warm", err)
		return false
	}
	return true
}

func coldName(dropped bool) string {
	if dropped {
		return "cold"
	}
	return "notcold"
}

// put streams the value into a new file of the side with PutReader
// through the vault dict API, timed from Open to the end of Close (both
// sides checkpoint their WAL into the file there), with the peak memory.
func put(side, size string, n int64) error {
	if bytes.HasPrefix(block(), []byte{0x89, 0x4b}) {
		return fmt.Errorf("the value starts with KohakuVault's header magic: change block's seed")
	}
	p := path(side, size)
	removeDB(p)
	if side == "kohaku" {
		if err := createKohaku(p); err != nil {
			return err
		}
	}
	s := sampleMemory()
	start := time.Now()
	v, err := openVault(side, size)
	if err != nil {
		return err
	}
	if err := v.PutReader(key, &blockReader{left: n}, n); err != nil {
		v.Close()
		return err
	}
	if err := v.Close(); err != nil {
		return err
	}
	d := time.Since(start)
	anon, hwm := s.end()
	result("put", side+"-"+size, mbps(n, d), "MB/s")
	result("rss", "put-"+side+"-"+size, anon, "MiB")
	result("hwm", "put-"+side+"-"+size, hwm, "MiB")
	return nil
}

// get streams the value that put wrote to a sink with GetTo, cold then
// warm, through the vault dict API, with the peak memory of both passes.
func get(side, size string, n int64) error {
	// Opening may make the -shm: do it before the caches are dropped.
	v, err := openVault(side, size)
	if err != nil {
		return err
	}
	v.Close()
	dropped := dropCaches()
	s := sampleMemory()
	for _, temp := range []string{coldName(dropped), "warm"} {
		start := time.Now()
		v, err := openVault(side, size)
		if err != nil {
			return err
		}
		got, err := v.GetTo(key, discard{})
		if cerr := v.Close(); err == nil {
			err = cerr
		}
		d := time.Since(start)
		if err != nil {
			return err
		}
		if got != n {
			return fmt.Errorf("read %d bytes, want %d", got, n)
		}
		result("get", side+"-"+size+"-"+temp, mbps(n, d), "MB/s")
	}
	anon, hwm := s.end()
	result("rss", "get-"+side+"-"+size, anon, "MiB")
	result("hwm", "get-"+side+"-"+size, hwm, "MiB")
	return nil
}

// reader is what readAt times: kohaku.Table.ReadAt (by key, blob I/O) or
// a native vault File's ReadAt (the vault dict API has no ReadAt of a
// KohakuVault file, whose Open is not supported).
type reader struct {
	readAt func(p []byte, off int64) (int, error)
	full   func() (int64, error) // one streamed read of the whole value
	close  func() error
}

func openReader(side string) (*reader, error) {
	p := path(side, "big")
	if side == "kohaku" {
		t, err := kohaku.Open(p, kohaku.Options{Table: "kv"})
		if err != nil {
			return nil, err
		}
		return &reader{
			readAt: func(b []byte, off int64) (int, error) { return t.ReadAt(key, b, off) },
			full:   func() (int64, error) { return t.GetTo(key, discard{}) },
			close:  t.Close,
		}, nil
	}
	v, err := openVault(side, "big")
	if err != nil {
		return nil, err
	}
	f, err := v.Open(key)
	if err != nil {
		v.Close()
		return nil, err
	}
	return &reader{
		readAt: f.ReadAt,
		full:   func() (int64, error) { return v.GetTo(key, discard{}) },
		close: func() error {
			f.Close()
			return v.Close()
		},
	}, nil
}

// readAt times random 1 MiB reads of the big value at offsets drawn from
// the repetition's seed (the same for both sides): with the page cache
// dropped, then after one full read of the value. Every read is checked.
func readAt(side string, n int64) error {
	rng := rand.New(rand.NewPCG(uint64(*rep), 0x6b6f))
	offs := make([]int64, *reads)
	for i := range offs {
		offs[i] = rng.Int64N(n - piece + 1)
	}
	r, err := openReader(side)
	if err != nil {
		return err
	}
	defer r.close()
	p, want := make([]byte, piece), make([]byte, piece)
	pass := func(variant string) error {
		// Only the ReadAt calls are timed: the check of the bytes is not
		// part of what is measured.
		var total, first time.Duration
		for i, off := range offs {
			start := time.Now()
			m, err := r.readAt(p, off)
			d := time.Since(start)
			total += d
			if i == 0 {
				first = d
			}
			if err != nil && !(err == io.EOF && off+piece == n) {
				return fmt.Errorf("ReadAt at %d: %w", off, err)
			}
			if m != piece {
				return fmt.Errorf("ReadAt at %d: %d bytes, want %d", off, m, piece)
			}
			if expected(want, off); !bytes.Equal(p, want) {
				return fmt.Errorf("ReadAt at %d: wrong bytes", off)
			}
		}
		result("readat", side+"-"+variant, float64(len(offs))/total.Seconds(), "reads/s")
		result("readat1", side+"-"+variant, float64(first.Microseconds())/1e3, "ms")
		return nil
	}
	if err := pass(coldName(dropCaches())); err != nil {
		return err
	}
	if got, err := r.full(); err != nil || got != n {
		return fmt.Errorf("full read: %d bytes, want %d: %v", got, n, err)
	}
	return pass("warm")
}
