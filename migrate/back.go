package migrate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"

	"github.com/kohakuvault/kvaultfs/kohaku"
	"github.com/kohakuvault/kvaultfs/store"
	"github.com/kohakuvault/kvaultfs/vault"
)

// Back copies the native vault at src into a KohakuVault table in dst:
// the table of an existing KohakuVault file (o.Table, or the only one), or
// a new file made as KohakuVault v0.8 makes it (kohaku.Create, format C,
// table o.Table or "kv") when dst is missing or empty. src is opened
// read-only and never written.
//
// Before anything is written (or dst created), every value is checked
// against what the table can hold. A value over kohaku.MaxValueSize, a
// value the header policy refuses in a B/C table (10 bytes or more
// starting 89 4B that are no valid KohakuVault header, unless dst already
// holds exactly that value) and a key that is not a regular file (a
// symlink, a device) make the run fail with ErrRefused, naming every such
// key, with dst unchanged.
//
// The table's write lock is held while one value streams in, so a
// KohakuVault process writing the same file meanwhile waits for each
// value (up to its busy_timeout, 5 s) or fails with "database is locked".
//
// A key another program deletes from the vault during the run is counted
// in Result.Vanished; one it rewrites during each of copyAttempts
// attempts to copy it is skipped and listed in an ErrSkipped error at the
// end, the other keys still copied.
func Back(ctx context.Context, src, dst string, o Options) (res Result, err error) {
	prefix := o.vaultPrefix()
	sh, err := inspect(src, prefix)
	if err != nil {
		return res, fmt.Errorf("source %s: %w", src, err)
	}
	if sh.missing {
		return res, fmt.Errorf("source %s: %w", src, fs.ErrNotExist)
	}
	if !sh.native {
		msg := fmt.Sprintf("source %s is not a kvaultfs vault: it holds %s", src, sh.describe())
		if len(sh.survey.KV) > 0 {
			msg += "; to copy a KohakuVault table into a kvaultfs vault leave out --to"
		}
		return res, fmt.Errorf("%w: %s", store.ErrInvalidArgument, msg)
	}
	if err := sameFile(src, dst); err != nil {
		return res, err
	}
	dh, err := inspect(dst, prefix)
	if err != nil {
		return res, fmt.Errorf("destination %s: %w; refusing to write to it", dst, err)
	}
	create := dh.missing || (dh.survey.Empty() && dh.emptyFile())
	format := kohaku.FormatBC // what Create makes
	switch {
	case create:
	case len(dh.survey.KV) == 0:
		return res, fmt.Errorf("%w: destination %s holds %s, not a KohakuVault table; refusing to write to it",
			store.ErrInvalidArgument, dst, dh.describe())
	default:
		info, err := dh.survey.Choose(o.Table)
		if err != nil {
			return res, fmt.Errorf("destination %s: %w", dst, err)
		}
		format = info.Format
	}

	v, err := openVault(src, o, true)
	if err != nil {
		return res, fmt.Errorf("source %s: %w", src, err)
	}
	defer v.Close()
	var t *kohaku.Table
	if !create {
		if t, err = kohaku.Open(dst, kohaku.Options{Table: o.Table}); err != nil {
			return res, fmt.Errorf("destination %s: %w", dst, err)
		}
		defer func() {
			if cerr := t.Close(); err == nil && cerr != nil {
				err = fmt.Errorf("destination %s: %w", dst, cerr)
			}
		}()
	}

	b := back{ctx: ctx, v: v, t: t, format: format, tr: tracker{fn: o.Progress}}
	if err := b.check(); err != nil {
		return res, b.stopped(err)
	}
	if create {
		if err := kohaku.Create(dst, o.Table); err != nil {
			return res, fmt.Errorf("destination %s: %w", dst, err)
		}
		if b.t, err = kohaku.Open(dst, kohaku.Options{Table: o.Table}); err != nil {
			return res, fmt.Errorf("destination %s: %w", dst, err)
		}
		defer func() {
			if cerr := b.t.Close(); err == nil && cerr != nil {
				err = fmt.Errorf("destination %s: %w", dst, cerr)
			}
		}()
	}
	b.res.Keys = b.tr.p.TotalKeys
	for k, err := range v.Keys("") {
		if err != nil {
			return b.res, b.stopped(fmt.Errorf("list source %s: %w", src, err))
		}
		if err := b.key(k); err != nil {
			return b.res, b.stopped(err)
		}
	}
	if err := b.extra(o.Delete); err != nil {
		return b.res, b.stopped(err)
	}
	if len(b.skipped) > 0 {
		return b.res, fmt.Errorf("%w: %s left out of the table (every other key is copied and verified): %s",
			ErrSkipped, keys(int64(len(b.skipped))), listOf(b.skipped))
	}
	return b.res, nil
}

// emptyFile reports whether an existing file has no bytes (a SQLite file
// with pages but no tables is not taken for a new file: it may have its
// own page size or journal mode that someone chose).
func (h holding) emptyFile() bool {
	return h.survey.Empty() && fileSize(h.path) == 0
}

// back is one run of Back.
type back struct {
	ctx    context.Context
	v      *vault.Vault
	t      *kohaku.Table // nil until a new file is created
	format kohaku.Format
	tr     tracker
	res    Result
	// skipped lists keys left out, each with why: another program
	// rewrote them in the vault during every attempt.
	skipped []string
}

func (b *back) stopped(err error) error {
	if b.ctx.Err() != nil {
		return interrupted(b.ctx.Err(), b.res)
	}
	return err
}

// check goes through every source key before anything is written, counts
// the totals, and refuses the run if any value cannot go into the table.
func (b *back) check() error {
	var tooBig, magic, special []string
	for k, err := range b.v.Keys("") {
		if err != nil {
			return fmt.Errorf("list source: %w", err)
		}
		if err := b.ctx.Err(); err != nil {
			return err
		}
		in, err := b.v.Stat(k)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("stat %s: %w", quoteKey(k), err)
		}
		switch {
		case in.Kind != store.KindFile:
			special = append(special, fmt.Sprintf("%s (%s)", quoteKey(k), in.Kind))
			continue
		case kohaku.CheckSize(k, in.Size) != nil:
			tooBig = append(tooBig, fmt.Sprintf("%s (%d bytes)", quoteKey(k), in.Size))
		case b.format == kohaku.FormatBC && in.Size >= headerLen:
			refused, err := b.headerRefused(k)
			if err != nil {
				return err
			}
			if refused {
				magic = append(magic, quoteKey(k))
			}
		}
		b.tr.p.TotalKeys++
		b.tr.p.TotalBytes += in.Size
	}
	if len(tooBig)+len(magic)+len(special) == 0 {
		return nil
	}
	var parts []string
	if len(tooBig) > 0 {
		parts = append(parts, fmt.Sprintf("%d over KohakuVault's limit of %d bytes per value (SQLite's, in every KohakuVault version): %s",
			len(tooBig), int64(kohaku.MaxValueSize), listOf(tooBig)))
	}
	if len(magic) > 0 {
		parts = append(parts, fmt.Sprintf("%d starting with the bytes 89 4B without being a valid KohakuVault value header, which KohakuVault 0.7 and later would fail to read (a format-A table stores them raw): %s",
			len(magic), listOf(magic)))
	}
	if len(special) > 0 {
		parts = append(parts, fmt.Sprintf("%d not regular files (a KohakuVault table holds only values): %s", len(special), listOf(special)))
	}
	return fmt.Errorf("%w: nothing was written: %s cannot go into a KohakuVault table: %s",
		ErrRefused, keys(int64(len(tooBig)+len(magic)+len(special))), strings.Join(parts, "; "))
}

// listOf lists already-quoted entries, at most listLimit.
func listOf(items []string) string {
	if len(items) <= listLimit {
		return strings.Join(items, ", ")
	}
	return strings.Join(items[:listLimit], ", ") + fmt.Sprintf(" and %d more", len(items)-listLimit)
}

// headerLen is the length of KohakuVault's value header (spec 5.2).
const headerLen = 10

// validHeader reports whether head is a value header KohakuVault 0.7+
// decodes without error: version 1, an encoding it knows, reserved bytes
// zero, the closing magic. It is kohaku's policy (kohaku.Table refuses in
// a B/C table a value of 10 bytes or more that starts 89 4B and is not
// such a header), checked here before anything is written;
// TestHeaderCheckAgreesWithTable keeps the two in step.
func validHeader(head []byte) bool {
	return len(head) >= headerLen && head[0] == 0x89 && head[1] == 0x4B && head[2] == 1 && head[3] <= 6 &&
		head[5] == 0 && head[6] == 0 && head[7] == 0 && head[8] == 0x56 && head[9] == 0x4B
}

// headerRefused reports whether a B/C table would refuse key's value: it
// starts 89 4B and is no valid header, and the destination does not
// already hold exactly it (then it is unchanged and never written).
func (b *back) headerRefused(key string) (bool, error) {
	f, err := b.v.Open(key)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read source %s: %w", quoteKey(key), err)
	}
	head := make([]byte, headerLen)
	n, err := f.ReadAt(head, 0)
	size := f.Size()
	f.Close()
	if err != nil && !(errors.Is(err, io.EOF) && n == len(head)) {
		return false, fmt.Errorf("read source %s: %w", quoteKey(key), err)
	}
	if head[0] != 0x89 || head[1] != 0x4B || validHeader(head) {
		return false, nil
	}
	if b.t == nil {
		return true, nil // a new file holds nothing yet
	}
	// Not b.unchanged: no progress is reported during the checks.
	n64, err := b.t.Size(key)
	if errors.Is(err, store.ErrNotFound) || (err == nil && n64 != size) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("read destination %s: %w", quoteKey(key), err)
	}
	same, err := sameValue(b.ctx, b.v, b.t, key, nil)
	if errors.Is(err, errSourceGone) || errors.Is(err, errSourceChanged) {
		// Deleted or rewritten by another program since: the copy reads
		// it again, and the table's own check refuses a bad header then.
		return false, nil
	}
	return !same, err
}

// key brings one source key up to date in the table. A key another
// program deletes from the vault during the run is counted in
// Result.Vanished; one it rewrites during every attempt is skipped.
func (b *back) key(key string) error {
	if err := b.ctx.Err(); err != nil {
		return err
	}
	b.tr.start(key)
	how, err := retryKey(b.ctx, func() error { return b.once(key) })
	switch {
	case how == keyGone:
		b.res.Vanished++
		b.tr.done(0)
	case how == keyChanged:
		b.skipped = append(b.skipped, changedText(key, err))
		b.res.Skipped++
		b.tr.done(0)
	case err != nil:
		return err
	}
	return nil
}

// once is one attempt at a key: errSourceGone or errSourceChanged when
// another program deleted or rewrote it in the vault meanwhile, else done.
func (b *back) once(key string) error {
	in, err := b.v.Stat(key)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: %w", errSourceGone, err)
	}
	if err != nil {
		return fmt.Errorf("stat %s: %w", quoteKey(key), err)
	}
	size := in.Size
	equal, err := b.unchanged(key, size)
	if err != nil {
		return err
	}
	if equal {
		b.res.Unchanged++
		b.res.UnchangedBytes += size
		b.tr.done(size)
		return nil
	}
	hook("copy", key)
	// A value stored when the cancel came needs nothing more: a table
	// keeps no metadata, and the next run's comparison verifies it.
	sum, _, err := copyValue(b.ctx, b.v, b.t, key, size, b.tr.bytes)
	switch {
	case errors.Is(err, errSourceGone) || errors.Is(err, errSourceChanged):
		return err
	case err != nil:
		return fmt.Errorf("copy %s: %w", quoteKey(key), err)
	}
	if err := verify(b.ctx, b.t, key, sum); err != nil {
		return err
	}
	b.res.Copied++
	b.res.CopiedBytes += size
	b.tr.done(size)
	return nil
}

// unchanged reports whether the table already holds key's value: the same
// size and the same SHA-256, both streamed.
func (b *back) unchanged(key string, size int64) (bool, error) {
	n, err := b.t.Size(key)
	if errors.Is(err, store.ErrNotFound) || (err == nil && n != size) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read destination %s: %w", quoteKey(key), err)
	}
	return sameValue(b.ctx, b.v, b.t, key, b.tr.bytes)
}

// extra handles the table's keys that the source lacks: deleted with
// del, else counted.
func (b *back) extra(del bool) error {
	return b.t.Scan("", "", 0, func(k string, _ int64) error {
		if err := b.ctx.Err(); err != nil {
			return err
		}
		ok, err := b.v.Exists(k)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if !del {
			b.res.Extra++
			return nil
		}
		// Scan runs fn outside its transactions and pages by key, so a
		// delete behind it is safe.
		if err := b.t.Delete(k); err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("delete %s from the destination: %w", quoteKey(k), err)
		}
		b.res.Deleted++
		return nil
	})
}
