package vault

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Deterministic test data of any size, made on the fly so that a
// multi-GiB value needs no memory, and a sampler of the resources a
// stream uses.

// splitmix64 is a fast, well-mixed 64-bit hash.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// fillGen fills p with the bytes of stream seed from offset off: byte o
// of the stream is byte o%8 of splitmix64(seed<<40 ^ o/8), so any range
// can be produced or checked without the rest.
func fillGen(p []byte, seed uint64, off int64) {
	base := seed << 40
	var w [8]byte
	for len(p) > 0 {
		word := uint64(off) / 8
		within := int(uint64(off) % 8)
		if within == 0 && len(p) >= 8 {
			n := len(p) / 8
			for i := 0; i < n; i++ {
				binary.LittleEndian.PutUint64(p[i*8:], splitmix64(base^(word+uint64(i))))
			}
			p = p[n*8:]
			off += int64(n * 8)
			continue
		}
		binary.LittleEndian.PutUint64(w[:], splitmix64(base^word))
		c := copy(p, w[within:])
		p = p[c:]
		off += int64(c)
	}
}

// genBytes returns n bytes of stream seed from offset 0.
func genBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	fillGen(b, seed, 0)
	return b
}

// genReader yields size bytes of stream seed.
type genReader struct {
	seed      uint64
	off, size int64
}

func (g *genReader) Read(p []byte) (int, error) {
	if g.off >= g.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), g.size-g.off))
	fillGen(p[:n], g.seed, g.off)
	g.off += int64(n)
	return n, nil
}

// genChecker is a writer that checks what it is given against stream
// seed, keeping the first mismatch.
type genChecker struct {
	seed uint64
	off  int64
	bad  int64 // offset of the first wrong byte, or -1
	buf  []byte
}

func newGenChecker(seed uint64) *genChecker { return &genChecker{seed: seed, bad: -1} }

func (c *genChecker) Write(p []byte) (int, error) {
	if c.bad < 0 {
		if cap(c.buf) < len(p) {
			c.buf = make([]byte, len(p))
		}
		want := c.buf[:len(p)]
		fillGen(want, c.seed, c.off)
		if !bytes.Equal(want, p) {
			for i := range p {
				if p[i] != want[i] {
					c.bad = c.off + int64(i)
					break
				}
			}
		}
	}
	c.off += int64(len(p))
	return len(p), nil
}

func TestFillGenRanges(t *testing.T) {
	whole := genBytes(7, 1000)
	for _, r := range [][2]int{{0, 1}, {3, 17}, {8, 16}, {9, 999}, {500, 1000}, {999, 1000}} {
		part := make([]byte, r[1]-r[0])
		fillGen(part, 7, int64(r[0]))
		if !bytes.Equal(part, whole[r[0]:r[1]]) {
			t.Fatalf("range %v differs", r)
		}
	}
	if bytes.Equal(genBytes(7, 64), genBytes(8, 64)) {
		t.Fatal("seeds 7 and 8 give the same bytes")
	}
	c := newGenChecker(7)
	c.Write(whole[:10])
	bad := bytes.Clone(whole[10:])
	bad[5] ^= 1
	c.Write(bad)
	if c.bad != 15 {
		t.Fatalf("checker found the flipped byte at %d, want 15", c.bad)
	}
}

// rssAnon returns this process's anonymous resident memory (RssAnon in
// /proc/self/status), which leaves out the mmap'd database file.
func rssAnon() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := s.Bytes()
		if rest, ok := bytes.CutPrefix(line, []byte("RssAnon:")); ok {
			fields := bytes.Fields(rest)
			if len(fields) >= 1 {
				kb, err := strconv.ParseInt(string(fields[0]), 10, 64)
				if err == nil {
					return kb << 10
				}
			}
		}
	}
	return -1
}

// fileSize returns a file's size, 0 if it does not exist.
func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// sampler records the peak RssAnon of this process and the peak size of
// a file (the -wal) at a fixed interval.
type sampler struct {
	stop    chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	rss     int64
	file    int64
	samples int
}

func startSampler(walPath string, every time.Duration) *sampler {
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	take := func() {
		r, w := rssAnon(), fileSize(walPath)
		s.mu.Lock()
		s.rss, s.file = max(s.rss, r), max(s.file, w)
		s.samples++
		s.mu.Unlock()
	}
	take()
	go func() {
		defer close(s.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-s.stop:
				take()
				return
			case <-tick.C:
				take()
			}
		}
	}()
	return s
}

// peaks stops the sampler and returns the peak RssAnon and file size and
// the number of samples taken.
func (s *sampler) peaks() (rss, file int64, samples int) {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rss, s.file, s.samples
}

// mib formats a byte count in MiB.
func mib(n int64) string { return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB" }
