package main

import (
	"bytes"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

func syncAll() { unix.Sync() }

// memSampler records the peak RssAnon of this process every 5 ms: its
// anonymous memory (Go heap, SQLite's page caches, buffers), leaving out
// the pages of the database file that SQLite maps, which the kernel can
// drop at will and which grow with what was read, not with what is held.
// VmHWM, the peak of the whole resident set including those mapped pages,
// is read at the end for comparison.
type memSampler struct {
	stop, done chan struct{}
	peak       int64
}

// sampleMemory starts a sampler, resetting VmHWM first (Linux 4.0+:
// writing 5 to clear_refs) so that it covers only what follows.
func sampleMemory() *memSampler {
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		note("cannot reset VmHWM (%v): it covers the whole job", err)
	}
	s := &memSampler{stop: make(chan struct{}), done: make(chan struct{})}
	s.take()
	go func() {
		defer close(s.done)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				s.take()
				return
			case <-t.C:
				s.take()
			}
		}
	}()
	return s
}

func (s *memSampler) take() { s.peak = max(s.peak, statusKiB("RssAnon")<<10) }

// end stops the sampler and returns the peak RssAnon and VmHWM in MiB.
func (s *memSampler) end() (anon, hwm float64) {
	close(s.stop)
	<-s.done
	return float64(s.peak) / (1 << 20), float64(statusKiB("VmHWM")) / 1024
}

// statusKiB is a field of /proc/self/status in KiB, 0 if absent.
func statusKiB(field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range bytes.Lines(b) {
		if rest, ok := bytes.CutPrefix(line, []byte(field+":")); ok {
			f := bytes.Fields(rest)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(string(f[0]), 10, 64)
				return kb
			}
		}
	}
	return 0
}
