package vault

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"slices"
	"sort"
	"sync"
	"testing"
)

// Many goroutines put, get, delete, rename, list, write files and flush
// at once with the cache on. Each owns its keys, so it knows at every
// moment what they must read as, whatever the others (and their flushes)
// do; the final state is then the union of the owners' models, checked
// in this vault, in another handle and after reopening.

const (
	raceWorkers = 8
	raceOps     = 150
	raceKeys    = 12
	raceCap     = 64 << 10
)

// raceOwner is one goroutine's keys and what they hold.
type raceOwner struct {
	id    int
	rng   *rand.Rand
	model map[string][]byte
	file  []byte // the contents of its file key, written at offsets
}

func (o *raceOwner) key(i int) string {
	switch i % 4 {
	case 3:
		return fmt.Sprintf("\x00g%d-%d", o.id, i) // a binary key
	case 2:
		return fmt.Sprintf("g%d/d%d/v", o.id, i)
	}
	return fmt.Sprintf("g%d/k%02d", o.id, i)
}

func (o *raceOwner) fileKey() string { return fmt.Sprintf("g%d/file", o.id) }

func (o *raceOwner) value(op int) []byte {
	n := o.rng.Intn(3000)
	if o.rng.Intn(25) == 0 {
		n = raceCap + 1000 // bigger than the cache: written directly
	}
	b := bytes.Repeat([]byte{byte(o.id), byte(op)}, n/2+8)
	copy(b, fmt.Sprintf("g%d op%d", o.id, op))
	return b
}

// listed returns the owner's keys in listing order.
func (o *raceOwner) listed(prefix string) []string {
	var ks []string
	for k := range o.model {
		if len(k) >= len(prefix) && k[:len(prefix)] == prefix {
			ks = append(ks, k)
		}
	}
	slices.SortFunc(ks, compareKeys)
	return ks
}

func (o *raceOwner) run(v *Vault) error {
	for op := range raceOps {
		k := o.key(o.rng.Intn(raceKeys))
		want, exists := o.model[k]
		switch r := o.rng.Intn(100); {
		case r < 35:
			val := o.value(op)
			if err := v.Put(k, val); err != nil {
				return fmt.Errorf("op %d: Put(%q): %w", op, k, err)
			}
			o.model[k] = val
		case r < 50:
			err := v.Delete(k)
			if exists && err != nil || !exists && !errors.Is(err, ErrNotFound) {
				return fmt.Errorf("op %d: Delete(%q) = %v, key exists: %v", op, k, err, exists)
			}
			delete(o.model, k)
		case r < 70:
			got, err := v.Get(k)
			if exists && (err != nil || !bytes.Equal(got, want)) || !exists && !errors.Is(err, ErrNotFound) {
				return fmt.Errorf("op %d: Get(%q) = %d bytes, %v; want %d bytes, exists %v", op, k, len(got), err, len(want), exists)
			}
		case r < 75:
			ok, err := v.Exists(k)
			if ok != exists || err != nil {
				return fmt.Errorf("op %d: Exists(%q) = %v, %v; want %v", op, k, ok, err, exists)
			}
			in, err := v.Stat(k)
			if exists && (err != nil || in.Size != int64(len(want))) || !exists && !errors.Is(err, ErrNotFound) {
				return fmt.Errorf("op %d: Stat(%q) = %+v, %v; want size %d, exists %v", op, k, in, err, len(want), exists)
			}
		case r < 82:
			prefix := fmt.Sprintf("g%d/", o.id)
			if o.rng.Intn(2) == 0 {
				prefix = fmt.Sprintf("\x00g%d-", o.id)
			}
			var got []string
			for key, err := range v.Keys(prefix) {
				if err != nil {
					return fmt.Errorf("op %d: Keys(%q): %w", op, prefix, err)
				}
				got = append(got, key)
			}
			if want := o.listed(prefix); !slices.Equal(got, want) {
				return fmt.Errorf("op %d: Keys(%q) = %q, want %q", op, prefix, got, want)
			}
		case r < 87:
			if _, err := v.FlushCache(); err != nil {
				return fmt.Errorf("op %d: FlushCache: %w", op, err)
			}
		case r < 91:
			if !exists {
				continue
			}
			dst := o.key(o.rng.Intn(raceKeys))
			if dst == k {
				continue
			}
			if err := v.Rename(k, dst); err != nil {
				return fmt.Errorf("op %d: Rename(%q, %q): %w", op, k, dst, err)
			}
			o.model[dst] = want
			delete(o.model, k)
		default: // write into its file at an offset, through the budget
			f, err := v.OpenFile(o.fileKey(), os.O_RDWR|os.O_CREATE, 0o644)
			if err != nil {
				return fmt.Errorf("op %d: OpenFile: %w", op, err)
			}
			off := o.rng.Intn(48 << 10)
			p := make([]byte, 1+o.rng.Intn(24<<10))
			o.rng.Read(p)
			_, werr := f.WriteAt(p, int64(off))
			if end := off + len(p); end > len(o.file) {
				o.file = append(o.file, make([]byte, end-len(o.file))...)
			}
			copy(o.file[off:], p)
			got := make([]byte, len(o.file))
			n, rerr := f.ReadAt(got, 0)
			cerr := f.Close()
			if werr != nil || cerr != nil || n != len(o.file) || !bytes.Equal(got, o.file) {
				return fmt.Errorf("op %d: file write %v, close %v, read %d bytes (%v), want %d equal", op, werr, cerr, n, rerr, len(o.file))
			}
			o.model[o.fileKey()] = slices.Clone(o.file)
		}
	}
	return nil
}

// checkModel compares everything w holds with the owners' models.
func checkModel(t *testing.T, w *Vault, owners []*raceOwner, when string) {
	t.Helper()
	all := map[string][]byte{}
	for _, o := range owners {
		for k, val := range o.model {
			all[k] = val
		}
	}
	var want []string
	for k := range all {
		want = append(want, k)
	}
	slices.SortFunc(want, compareKeys)
	if got := allKeys(t, w, ""); !slices.Equal(got, want) {
		t.Fatalf("%s: Keys = %q,\nwant %q", when, got, want)
	}
	for k, val := range all {
		got, err := w.Get(k)
		if err != nil || !bytes.Equal(got, val) {
			t.Fatalf("%s: Get(%q) = %d bytes, %v; want %d bytes", when, k, len(got), err, len(val))
		}
	}
	wantLen(t, w, len(all))
}

func TestCacheConcurrentModel(t *testing.T) {
	v := openTest(t, smallChunks())
	enableCache(t, v, raceCap, raceCap/2)
	owners := make([]*raceOwner, raceWorkers)
	for i := range owners {
		owners[i] = &raceOwner{id: i, rng: rand.New(rand.NewSource(int64(i) + 1)), model: map[string][]byte{}}
	}
	var wg sync.WaitGroup
	errs := make(chan error, raceWorkers+1)
	for _, o := range owners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := o.run(v); err != nil {
				errs <- fmt.Errorf("g%d: %w", o.id, err)
			}
		}()
	}
	// A reader of everything: listings are sorted without repeats, and
	// every listed key that is read back is a value or was just deleted.
	stop := make(chan struct{})
	var readers sync.WaitGroup
	readers.Add(1)
	go func() {
		defer readers.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			var prev string
			for k, err := range v.Keys("") {
				if err != nil {
					errs <- fmt.Errorf("reader: Keys: %w", err)
					return
				}
				if prev != "" && compareKeys(prev, k) >= 0 {
					errs <- fmt.Errorf("reader: Keys yielded %q after %q", k, prev)
					return
				}
				prev = k
			}
			if _, err := v.Len(); err != nil {
				errs <- fmt.Errorf("reader: Len: %w", err)
				return
			}
		}
	}()
	wg.Wait()
	close(stop)
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}

	checkModel(t, v, owners, "with the cache")
	other := openSecond(t, v)
	mustFlush(t, v)
	checkModel(t, v, owners, "after the flush")
	checkModel(t, other, owners, "another handle after the flush")
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	w, err := Open(v.Path(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	checkModel(t, w, owners, "reopened")
}

// Len agrees with the model while flushes run: with pending new keys and
// deletes in the cache and no writes, every Len during a flush counts the
// same.
func TestCacheLenDuringFlush(t *testing.T) {
	v := openTest(t, nil)
	const stored, rounds = 100, 4
	for i := range stored {
		mustPut(t, v, fmt.Sprintf("s%03d", i), []byte("s"))
	}
	enableCache(t, v, 64<<20, 64<<20)
	want := stored
	for round := range rounds {
		for i := range 150 {
			mustPut(t, v, fmt.Sprintf("r%d/n%03d", round, i), []byte("n"))
		}
		for i := round * 20; i < round*20+20; i++ {
			if err := v.Delete(fmt.Sprintf("s%03d", i)); err != nil {
				t.Fatal(err)
			}
		}
		want += 150 - 20
		var wg sync.WaitGroup
		counts := make([][]int, 3)
		for r := range counts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 6 {
					n, err := v.Len()
					if err != nil {
						t.Error(err)
						return
					}
					counts[r] = append(counts[r], n)
				}
			}()
		}
		if _, err := v.FlushCache(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		for _, cs := range counts {
			for _, n := range cs {
				if n != want {
					sort.Ints(cs)
					t.Fatalf("round %d: Len during a flush = %v, want %d each time", round, cs, want)
				}
			}
		}
	}
}
