package kohaku

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// scanAll collects Scan's keys, checking each size against the value.
func scanAll(t *testing.T, tb *Table, prefix, after string, limit int) []string {
	t.Helper()
	var keys []string
	err := tb.Scan(prefix, after, limit, func(k string, size int64) error {
		if n, err := tb.Size(k); err != nil || n != size {
			t.Fatalf("Scan size of %q = %d, Size %d (%v)", k, size, n, err)
		}
		keys = append(keys, k)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// want filters and sorts keys as Scan must: memcmp order (Go's string
// comparison is bytewise), prefix, > after (after == "" from the start).
func want(keys []string, prefix, after string, limit int) []string {
	var out []string
	for _, k := range keys {
		if strings.HasPrefix(k, prefix) && (after == "" || k > after) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}

func TestScan(t *testing.T) {
	watchdog(t, 2*time.Minute)
	keys := []string{"", "a", "a/1", "a/2", "a\xff", "a\xff\xff", "a\xff\xffz", "a\xff\x00", "b", "\xff", "\xff\xff", "\xff\xff\x01", "\x00", "A"}
	for i := range 2*scanBatch + 7 { // more than two batches
		keys = append(keys, fmt.Sprintf("many/%05d", i))
	}
	for _, f := range formats {
		t.Run(f.String(), func(t *testing.T) {
			tb := openTable(t, f)
			var items []Item
			for i, k := range keys {
				items = append(items, Item{Key: k, Value: make([]byte, i%7)})
			}
			if err := tb.PutBatch(items); err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				prefix, after string
				limit         int
			}{
				{"", "", 0}, {"", "", 3}, {"a", "", 0}, {"a\xff", "", 0}, {"a\xff\xff", "", 0},
				{"\xff", "", 0}, {"\xff\xff", "", 0}, {"many/", "", 0}, {"many/", "many/00999", 0},
				{"many/", "many/00999", 1500}, {"a", "a/1", 0}, {"a", "0", 0}, {"a", "zzz", 0},
				{"", "\xff", 0}, {"nope", "", 0},
			} {
				got := scanAll(t, tb, c.prefix, c.after, c.limit)
				w := want(keys, c.prefix, c.after, c.limit)
				if !slices.Equal(got, w) {
					t.Fatalf("Scan(%q, %q, %d): %d keys %q..., want %d", c.prefix, c.after, c.limit, len(got), head(got), len(w))
				}
			}
			stop := errors.New("stop")
			n := 0
			if err := tb.Scan("", "", 0, func(string, int64) error { n++; return stop }); err != stop || n != 1 {
				t.Fatalf("fn's error: %v after %d keys", err, n)
			}
		})
	}
}

func head(s []string) []string { return s[:min(len(s), 5)] }

func TestSuccessor(t *testing.T) {
	for in, out := range map[string]string{"a": "b", "a\xff": "b", "a\xfe\xff\xff": "a\xff", "": "", "\xff\xff": ""} {
		got, ok := successor(in)
		if got != out || ok != (out != "") {
			t.Errorf("successor(%q) = %q, %v", in, got, ok)
		}
	}
}
