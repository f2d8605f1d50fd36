// Package migrate copies a KohakuVault table into a native kvaultfs vault
// (Forward) and a native vault into a KohakuVault table (Back).
//
// Every value is streamed, never held whole in memory, and verified after
// it is written: its SHA-256 read back from the destination must equal the
// SHA-256 of the bytes read from the source. The source is only read. A
// second run copies only what changed: a key whose destination value has
// the same size and the same SHA-256 is left as it is. KohakuVault keeps no
// generation or time per key, so nothing cheaper tells an unchanged value
// from a changed one of the same length; a second run therefore reads both
// sides of every key whose sizes match, and writes nothing for them.
//
// Keys only in the destination are left alone unless Options.Delete. A run
// stops between keys when its context is cancelled; a value being written
// then is rolled back (both stores replace a value atomically), so every
// key holds either its old or its new value, and a later run completes the
// copy. A value already stored when the cancel comes keeps its metadata
// too: a later run finds it unchanged and would not set it.
//
// Another program may write the source during a run (KohakuVault, or a
// kvaultfs mount of the vault). A key it deletes after the listing is
// passed over and counted in Result.Vanished. A key it rewrites while the
// run compares or copies it is tried again, up to copyAttempts times,
// then skipped and named in an ErrSkipped error: the other keys are still
// copied, so a key rewritten all the time cannot stop every run.
//
// Only cmd/kvaultfs imports this package; it imports vault and kohaku.
package migrate

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"github.com/kohakuvault/kvaultfs/store"
)

// Options configure a migration.
type Options struct {
	// Table names the KohakuVault table: the one to read (Forward) or to
	// write (Back). "" means the only KohakuVault table of the file (a
	// file with several is refused, listing them); Back into a new file
	// names the table it creates, "kv" when "".
	Table string
	// VaultTable is the native vault's table prefix; "" means
	// vault.DefaultTable.
	VaultTable string
	// Delete removes keys the destination holds and the source does not;
	// without it they are left alone and counted in Result.Extra.
	Delete bool
	// Progress, if not nil, is called as the copy advances: after every
	// key, and every progressStep bytes within a large value. It runs on
	// the migrating goroutine and should return quickly.
	Progress func(Progress)
}

// Progress is how far a migration is.
type Progress struct {
	Keys, TotalKeys   int64 // keys done (copied or found unchanged) and in the source
	Bytes, TotalBytes int64 // bytes of the source values done and in all
	Key               string
}

// progressStep is how many bytes of one value pass between two progress
// reports, so a large value does not look stuck. A variable so that tests
// can see reports inside small values.
var progressStep int64 = 16 << 20

// Result counts what a migration did.
type Result struct {
	Keys           int64 // keys in the source
	Copied         int64 // keys written to the destination (and verified)
	CopiedBytes    int64
	Unchanged      int64 // keys whose destination value was already equal
	UnchangedBytes int64
	Deleted        int64 // keys only in the destination that Delete removed
	Extra          int64 // keys only in the destination, left alone
	// Vanished counts source keys another program deleted during the
	// run, after they were listed: nothing to copy, not an error.
	Vanished int64
	// Skipped counts keys left out, each named in the ErrSkipped error.
	Skipped int64
}

// Summary is the one-line report of a finished run, as the CLI prints it.
func (r Result) Summary() string {
	s := fmt.Sprintf("copied %s (%s), %d unchanged, verified", keys(r.Copied), bytesText(r.CopiedBytes), r.Unchanged)
	if r.Deleted > 0 {
		s += fmt.Sprintf("; deleted %s only in the destination", keys(r.Deleted))
	}
	if r.Extra > 0 {
		s += fmt.Sprintf("; %s only in the destination left alone (--delete removes them)", keys(r.Extra))
	}
	if r.Vanished > 0 {
		s += fmt.Sprintf("; %s deleted in the source during the run, not copied", keys(r.Vanished))
	}
	if r.Skipped > 0 {
		s += fmt.Sprintf("; %s skipped", keys(r.Skipped))
	}
	return s
}

func keys(n int64) string {
	if n == 1 {
		return "1 key"
	}
	return fmt.Sprintf("%d keys", n)
}

func bytesText(n int64) string {
	if n == 1 {
		return "1 byte"
	}
	return fmt.Sprintf("%d bytes", n)
}

// ErrRefused: the migration was refused before anything was written (a
// source value the destination cannot hold). Also store.ErrInvalidArgument.
var ErrRefused = store.Refine(store.ErrInvalidArgument, "refused")

// ErrSkipped: some keys were left out, the destination could not hold
// them or another program kept rewriting them in the source during the
// run; the rest was copied. Also store.ErrInvalidArgument.
var ErrSkipped = store.Refine(store.ErrInvalidArgument, "keys skipped")

// ErrMismatch: a value read back from the destination differs from the
// source's. Also store.ErrCorrupt.
var ErrMismatch = store.Refine(store.ErrCorrupt, "verification failed")

// ErrInterrupted: the context was cancelled; the run stopped between keys.
var ErrInterrupted = errors.New("interrupted")

// listLimit is how many keys an error message lists before "and N more".
const listLimit = 20

// quoteKey shows a key as Go quotes it, so an empty key, spaces, commas
// and bytes that are not text are visible.
func quoteKey(k string) string { return fmt.Sprintf("%q", k) }

// digest is a SHA-256 sum and the length it covers.
type digest struct {
	sum [sha256.Size]byte
	n   int64
}

// hashWriter hashes what it is given, reports progress, and stops with
// the context's error once cancelled.
type hashWriter struct {
	ctx context.Context
	h   hash.Hash
	n   int64
	// onBytes, if set, is called with the bytes written so far every
	// progressStep bytes.
	onBytes func(n int64)
	last    int64
}

func newHashWriter(ctx context.Context, onBytes func(int64)) *hashWriter {
	return &hashWriter{ctx: ctx, h: sha256.New(), onBytes: onBytes}
}

func (w *hashWriter) Write(p []byte) (int, error) {
	if err := w.ctx.Err(); err != nil {
		return 0, err
	}
	w.h.Write(p)
	w.n += int64(len(p))
	if w.onBytes != nil && w.n-w.last >= progressStep {
		w.last = w.n
		w.onBytes(w.n)
	}
	return len(p), nil
}

func (w *hashWriter) digest() digest {
	var d digest
	copy(d.sum[:], w.h.Sum(nil))
	d.n = w.n
	return d
}

// getter is what both stores offer for streaming a value out.
type getter interface {
	GetTo(key string, w io.Writer) (int64, error)
}

// putter is what both stores offer for streaming a value in, atomically
// per key.
type putter interface {
	PutReader(key string, r io.Reader, size int64) error
}

// hashOf streams key's value from g into SHA-256.
func hashOf(ctx context.Context, g getter, key string, onBytes func(int64)) (digest, error) {
	w := newHashWriter(ctx, onBytes)
	if _, err := g.GetTo(key, w); err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return digest{}, cerr
		}
		return digest{}, err
	}
	return w.digest(), nil
}

// sameValue reports whether src and dst hold the same bytes under key,
// streaming both at once into SHA-256 (the caller has compared sizes).
// A destination value that disappears or changes during the read is
// "not the same", so it is copied again; a source value that does is
// errSourceGone or errSourceChanged (sourceErr).
func sameValue(ctx context.Context, src, dst getter, key string, onBytes func(int64)) (bool, error) {
	type result struct {
		d   digest
		err error
	}
	theirs := make(chan result, 1)
	go func() {
		d, err := hashOf(ctx, dst, key, nil)
		theirs <- result{d, err}
	}()
	ours, serr := hashOf(ctx, src, key, onBytes)
	r := <-theirs
	switch {
	case serr != nil:
		return false, sourceErr(serr)
	case errors.Is(r.err, store.ErrNotFound) || errors.Is(r.err, store.ErrChanged):
		return false, nil
	case r.err != nil:
		return false, fmt.Errorf("read destination %s: %w", quoteKey(key), r.err)
	}
	return ours == r.d, nil
}

// copyValue streams key's value of size bytes from src into dst and
// returns the SHA-256 of the bytes read from src. The source writes into
// a pipe from its own goroutine while dst.PutReader reads the other end,
// so no more than the stores' own buffers is in memory. A cancelled
// context closes the pipe: PutReader then fails and keeps the old value.
//
// stored reports that dst holds the whole value read (PutReader took
// exactly size bytes and committed). It can be true with the context's
// error, when the cancel came after the commit: the caller then finishes
// that key's metadata. A source that no longer holds key, or whose value
// is not size bytes long any more, is errSourceGone or errSourceChanged.
func copyValue(ctx context.Context, src getter, dst putter, key string, size int64, onBytes func(int64)) (d digest, stored bool, err error) {
	pr, pw := io.Pipe()
	stop := context.AfterFunc(ctx, func() { pr.CloseWithError(ctx.Err()) })
	defer stop()
	hw := newHashWriter(ctx, onBytes)
	out := &pipeWriter{w: pw}
	srcErr := make(chan error, 1)
	go func() {
		_, err := src.GetTo(key, io.MultiWriter(hw, out))
		pw.CloseWithError(err) // nil: EOF for the reader
		if out.failed {
			err = nil // the put side closed the pipe: its error is the one to report
		}
		srcErr <- err
	}()
	perr := dst.PutReader(key, pr, size)
	if perr == nil {
		hook("stored", key)
	}
	pr.CloseWithError(errPutEnded) // unblocks the source if the put stopped early
	gerr := <-srcErr
	d = hw.digest()
	// PutReader succeeds only after reading exactly size bytes and the
	// end of the pipe, so the source had written all it had.
	stored = perr == nil && gerr == nil && d.n == size
	switch {
	case ctx.Err() != nil:
		if !stored {
			d = digest{}
		}
		return d, stored, ctx.Err()
	case gerr != nil:
		return digest{}, false, sourceErr(gerr)
	// The hash counts every byte the source wrote, including the piece
	// the pipe refused: more than size bytes means the value grew; fewer,
	// with the source at its end (the put did not stop it), that it
	// shrank. Either makes the put fail, with a message about its reader.
	case d.n > size || (!out.failed && d.n != size):
		return digest{}, false, fmt.Errorf("%w (%d bytes when sized, %d when read)", errSourceChanged, size, d.n)
	case perr != nil:
		return digest{}, false, perr
	}
	return d, true, nil
}

// errSourceGone: the source no longer holds a key it listed; another
// program deleted it during the run.
var errSourceGone = errors.New("deleted in the source during the run")

// errSourceChanged: another program rewrote a source value while it was
// being compared or copied (another length, or the native vault's
// ErrChanged); trying the key again reads its new value.
var errSourceChanged = errors.New("rewritten in the source during its copy")

// sourceErr classifies an error of reading the source.
func sourceErr(err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("%w: %w", errSourceGone, err)
	case errors.Is(err, store.ErrChanged):
		return fmt.Errorf("%w: %w", errSourceChanged, err)
	}
	return fmt.Errorf("read source: %w", err)
}

// copyAttempts is how many times a key whose source value another
// program rewrites during its copy is tried before it is skipped, so that
// a key rewritten all the time cannot stop every run.
const copyAttempts = 3

// retryPause is the pause before the second attempt at a key, doubled
// before each further one: a writer's burst may be over by then. A
// variable so that tests can shorten it.
var retryPause = 50 * time.Millisecond

// outcome is how one key of a run ended, apart from an error.
type outcome int

const (
	keyDone    outcome = iota // copied, unchanged, or skipped by once itself
	keyGone                   // deleted in the source meanwhile
	keyChanged                // rewritten during every attempt
)

// retryKey runs once, the whole handling of one key, again while the
// source value changes under it, up to copyAttempts times. It returns
// keyChanged with the last errSourceChanged (to name in the skip, not to
// stop the run), and any other error as it is.
func retryKey(ctx context.Context, once func() error) (outcome, error) {
	var err error
	for attempt := range copyAttempts {
		if attempt > 0 {
			t := time.NewTimer(retryPause << (attempt - 1))
			select {
			case <-ctx.Done():
				t.Stop()
				return keyDone, ctx.Err()
			case <-t.C:
			}
		}
		err = once()
		switch {
		case errors.Is(err, errSourceGone):
			return keyGone, nil
		case !errors.Is(err, errSourceChanged):
			return keyDone, err
		}
	}
	return keyChanged, err
}

// changedText says why a key rewritten during every attempt was skipped.
func changedText(key string, err error) string {
	return fmt.Sprintf("%s (rewritten in the source during each of %d attempts to copy it, last: %v; run again once it is left alone)",
		quoteKey(key), copyAttempts, err)
}

// testHook, if set by a test, is called at points of a key's copy where
// another program's write or a cancel must be placed exactly: "copy"
// just before a value is copied, "stored" once the destination holds it.
var testHook func(event, key string)

func hook(event, key string) {
	if testHook != nil {
		testHook(event, key)
	}
}

// errPutEnded closes a pipe whose reading put has returned.
var errPutEnded = errors.New("the destination stopped reading")

// pipeWriter records whether a write into the pipe failed, which tells a
// failure of the reading side from one of the source.
type pipeWriter struct {
	w      *io.PipeWriter
	failed bool // only touched by the source's goroutine
}

func (p *pipeWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	if err != nil {
		p.failed = true
	}
	return n, err
}

// verify reads key back from dst and compares it with the source's digest.
func verify(ctx context.Context, dst getter, key string, want digest) error {
	got, err := hashOf(ctx, dst, key, nil)
	if err != nil {
		return fmt.Errorf("verify %s: %w", quoteKey(key), err)
	}
	if got != want {
		return fmt.Errorf("%w: %s reads back as %d bytes with SHA-256 %x, the source had %d bytes with SHA-256 %x",
			ErrMismatch, quoteKey(key), got.n, got.sum, want.n, want.sum)
	}
	return nil
}

// tracker turns per-key and per-byte advances into Progress calls.
type tracker struct {
	fn   func(Progress)
	p    Progress
	base int64 // Bytes before the current key
	cur  int64 // bytes of the current key already counted
}

func (t *tracker) start(key string) {
	t.p.Key = key
	t.base = t.p.Bytes
	t.cur = 0
}

// bytes reports n bytes of the current key done (n never decreases within
// a key; a re-read for the copy after a comparison is not counted twice).
func (t *tracker) bytes(n int64) {
	if n <= t.cur {
		return
	}
	t.cur = n
	t.p.Bytes = t.base + n
	if t.fn != nil {
		t.fn(t.p)
	}
}

// done finishes the current key of size bytes (0 for a key passed over;
// Bytes never goes back below what was reported within the key).
func (t *tracker) done(size int64) {
	t.p.Keys++
	t.p.Bytes = t.base + max(size, t.cur)
	if t.fn != nil {
		t.fn(t.p)
	}
}

// interrupted wraps a context error for the caller, saying what it means
// for the destination.
func interrupted(err error, r Result) error {
	return fmt.Errorf("%w (%v) after %d of %d keys: every key holds its old or its new value; run the migration again to finish",
		ErrInterrupted, err, r.Copied+r.Unchanged, r.Keys)
}
