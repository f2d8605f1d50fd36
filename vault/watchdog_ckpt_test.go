package vault

import (
	"fmt"
	"os"
	"runtime"
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
	timer := time.AfterFunc(d, func() {
		buf := make([]byte, 8<<20)
		n := runtime.Stack(buf, true)
		fmt.Fprintf(os.Stderr, "%s: no progress within %v; goroutines:\n%s\n", name, d, buf[:n])
		panic(fmt.Sprintf("%s: watchdog: hung for %v", name, d))
	})
	t.Cleanup(func() { timer.Stop() })
}
