package vault

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// Random byte flips anywhere in a vault file, over many seeds: opening,
// reading and verifying the damaged file never panics and never hangs
// (a watchdog dumps every goroutine and fails), and damage that changes
// what a read returns is reported: by Open, by the read itself, or by
// Verify. The one change no check can see is a size that grew (the new
// tail reads as zeros, as after a truncate that grows the file); the
// test allows exactly that and counts it.

// flipValues is what the flipped vault holds.
var flipValues = map[string][]byte{
	"a":           genBytes(31, 3*4096+100),
	"dir/b":       genBytes(32, 4096),
	"dir/sub/c":   genBytes(33, 9000),
	"small":       []byte("small value"),
	"\x00bin\xff": genBytes(34, 5000),
}

// flipSeeds is how many damaged copies are tried (fewer with -short).
func flipSeeds() int {
	if testing.Short() {
		return 60
	}
	return 150
}

func TestRandomByteFlips(t *testing.T) {
	src := filepath.Join(t.TempDir(), "clean.db")
	o := smallChunks()
	o.PageSize = 1024 // a small file: flips land in every kind of page
	v, err := Open(src, o)
	if err != nil {
		t.Fatal(err)
	}
	for k, val := range flipValues {
		mustPut(t, v, k, val)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	clean, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	var caught, harmless, grown int
	for seed := 1; seed <= flipSeeds(); seed++ {
		rng := rand.New(rand.NewPCG(uint64(seed), 8))
		data := bytes.Clone(clean)
		for range 1 + rng.IntN(4) {
			i := rng.IntN(len(data))
			data[i] ^= byte(1 + rng.IntN(255))
		}
		path := filepath.Join(t.TempDir(), "flipped.db")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		var outcome string
		done := make(chan struct{})
		go func() {
			defer close(done)
			outcome = flipOutcome(t, seed, path)
		}()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("seed %d: no answer after 60 s; goroutines:\n%s", seed, buf[:n])
		}
		switch outcome {
		case "caught":
			caught++
		case "harmless":
			harmless++
		case "grown":
			grown++
		default:
			t.Errorf("seed %d: %s", seed, outcome)
		}
	}
	t.Logf("%d seeds: %d caught, %d harmless, %d sizes grown (reads as zeros, unseen)", flipSeeds(), caught, harmless, grown)
}

// flipOutcome opens a damaged copy, reads every value and verifies it,
// and says whether the damage was caught, harmless, an unseen grown size,
// or (the failure) silent wrong bytes.
func flipOutcome(t *testing.T, seed int, path string) (outcome string) {
	defer func() {
		if r := recover(); r != nil {
			buf := make([]byte, 64<<10)
			n := runtime.Stack(buf, false)
			outcome = "panic: " + toString(r) + "\n" + string(buf[:n])
		}
	}()
	v, err := Open(path, nil)
	if err != nil {
		return "caught" // refused to open: reported
	}
	defer v.Close()
	reported := false
	var damage []Damage
	if _, err := v.Verify(func(d Damage) { damage = append(damage, d) }); err != nil || len(damage) > 0 {
		reported = true
	}
	wrong, grown := false, false
	for k, want := range flipValues {
		got, err := v.Get(k)
		switch {
		case err != nil:
			reported = true
		case bytes.Equal(got, want):
		case len(got) > len(want) && bytes.Equal(got[:len(want)], want) && allZero(got[len(want):]):
			grown = true
		default:
			wrong = true
		}
	}
	for _, err := range v.Keys("") {
		if err != nil {
			reported = true
		}
	}
	switch {
	case wrong && !reported:
		return "a read returned wrong bytes and nothing reported damage"
	case reported:
		return "caught"
	case grown:
		return "grown"
	}
	return "harmless"
}

func toString(r any) string {
	if e, ok := r.(error); ok {
		return e.Error()
	}
	if s, ok := r.(string); ok {
		return s
	}
	return "non-error panic"
}
