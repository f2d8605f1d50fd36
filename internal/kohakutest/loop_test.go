package kohakutest

import (
	"strings"
	"sync"
	"testing"
	"time"
)

// TestKohakuLoop runs the loop script on copies of formats A and C, alone
// and two at once on one file, and checks that it reports success, that the
// table afterwards is exactly the fixture's (its own keys deleted, every key
// and value still a BLOB, size right), and that the schema, page size and
// journal mode did not change.
func TestKohakuLoop(t *testing.T) {
	for _, c := range []struct{ fixture, format string }{{"format-a.db", "A"}, {"format-c.db", "BC"}} {
		path := CopyFixture(t, c.fixture)
		schema := Schema(t, path)
		l := StartKohakuLoop(t, path, "kv", 6, "solo")
		if err := l.Wait(2 * time.Minute); err != nil {
			t.Fatalf("%s: %v", c.fixture, err)
		}
		if want := "(format " + c.format + ")"; !strings.Contains(l.Output(), want) || !strings.Contains(l.Output(), ": ok") {
			t.Errorf("%s: output %q, want %q and ok", c.fixture, l.Output(), want)
		}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, tag := range []string{"one", "two"} {
			loop := StartKohakuLoop(t, path, "kv", 15, tag)
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = loop.Wait(2 * time.Minute)
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("%s: concurrent loop %d: %v", c.fixture, i, err)
			}
		}
		CheckManifest(t, path, c.fixture, "kv")
		if Schema(t, path) != schema || PageSize(t, path) != 32768 || JournalMode(t, path) != "wal" {
			t.Errorf("%s: the loop changed the schema, page size or journal mode", c.fixture)
		}
	}
}

// TestKohakuLoopFails: a missing table, a table of another shape and a
// missing file end the script with an error on stderr.
func TestKohakuLoopFails(t *testing.T) {
	path := CopyFixture(t, "format-c.db")
	for _, c := range []struct{ path, table, msg string }{
		{path, "nope", "no table nope"},
		{path, "kohakuvault_meta", "no KohakuVault shape"},
		{path + ".missing", "kv", "no such file"},
	} {
		err := StartKohakuLoop(t, c.path, c.table, 2, "x").Wait(time.Minute)
		if err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("table %s of %s: %v, want an error with %q", c.table, c.path, err, c.msg)
		}
	}
}
