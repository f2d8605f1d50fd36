package vault

import (
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// hangWatchdog fails the test binary, with every goroutine's stack on
// stderr, if the test and its clean-ups have not ended within d: a hang
// then shows where it waits instead of running into the -timeout of the
// whole binary. Call it before registering clean-ups (openTest), so that
// they run under it too.
func hangWatchdog(t testing.TB, d time.Duration) {
	t.Helper()
	name := t.Name()
	timer := time.AfterFunc(d, func() { hang(name, fmt.Sprintf("no progress within %v", d)) })
	t.Cleanup(func() { timer.Stop() })
}

// watchdog is hangWatchdog for a part of a test: it ends the binary (see
// hang) unless the returned function is called within d.
func watchdog(t *testing.T, d time.Duration) (stop func()) {
	t.Helper()
	name := t.Name()
	timer := time.AfterFunc(d, func() { hang(name, fmt.Sprintf("still running after %v", d)) })
	return func() { timer.Stop() }
}

// hang ends the test binary with every goroutine's stack, as go test's
// -timeout does: a hung test cannot unwind (its deferred closes would
// wait too), and the stacks are what shows the cycle.
func hang(name, what string) {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	fmt.Fprintf(os.Stderr, "%s: %s (hang); goroutines:\n%s\n", name, what, buf)
	panic(fmt.Sprintf("%s: watchdog: %s", name, what))
}

// progressWatchdog ends the test binary (see hang) when progress stops
// advancing for stall. The returned function stops it.
func progressWatchdog(t *testing.T, progress *atomic.Int64, stall time.Duration) func() {
	t.Helper()
	done := make(chan struct{})
	fired := make(chan struct{})
	go func() {
		defer close(fired)
		last, since := progress.Load(), time.Now()
		tick := time.NewTicker(stall / 10)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			if p := progress.Load(); p != last {
				last, since = p, time.Now()
				continue
			}
			if time.Since(since) >= stall {
				hang(t.Name(), fmt.Sprintf("no progress for %v", stall))
			}
		}
	}()
	return func() { close(done); <-fired }
}

// waitOrHang waits for done, and ends the test binary (see hang) if it
// has not come after d.
func waitOrHang(t *testing.T, done <-chan struct{}, d time.Duration, what string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(d):
		hang(t.Name(), fmt.Sprintf("%s did not return within %v", what, d))
	}
}
