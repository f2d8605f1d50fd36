package migrate

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/kohakuvault/kvaultfs/kohaku"
	"github.com/kohakuvault/kvaultfs/store"
	"github.com/kohakuvault/kvaultfs/vault"
)

// Forward copies the KohakuVault table of src (o.Table, or the only one)
// into the native vault at dst, which is created if missing and updated if
// it is a native vault already. src is opened read-only and never written.
//
// Every key is kept as it is (a key that is not a path is a binary key of
// the native vault). A copied value gets mode 0644, the running user as
// owner, and src's modification time as its mtime: KohakuVault records no
// time or mode per key, and the file's mtime is the latest time any of
// its values can have been written.
//
// A key the native vault cannot hold (a key "a/b" beside a key "a": a
// file cannot also be a directory) is skipped and listed in an ErrSkipped
// error at the end; the other keys are still copied. So is a key that
// KohakuVault rewrites to another length during each of copyAttempts
// attempts to copy it, while a key it deletes during the run is counted
// in Result.Vanished. The Result is valid with any error.
func Forward(ctx context.Context, src, dst string, o Options) (res Result, err error) {
	prefix := o.vaultPrefix()
	sh, err := inspect(src, prefix)
	if err != nil {
		return res, fmt.Errorf("source %s: %w", src, err)
	}
	if sh.missing {
		return res, fmt.Errorf("source %s: %w", src, fs.ErrNotExist)
	}
	if len(sh.survey.KV) == 0 {
		msg := fmt.Sprintf("source %s is not a KohakuVault file: it holds %s", src, sh.describe())
		if sh.native {
			msg += "; to copy a kvaultfs vault into a KohakuVault file use --to kohakuvault"
		}
		return res, fmt.Errorf("%w: %s", store.ErrInvalidArgument, msg)
	}
	if _, err := sh.survey.Choose(o.Table); err != nil {
		return res, fmt.Errorf("source %s: %w", src, err)
	}
	if err := sameFile(src, dst); err != nil {
		return res, err
	}
	dh, err := inspect(dst, prefix)
	if err != nil {
		return res, fmt.Errorf("destination %s: %w; refusing to write to it", dst, err)
	}
	if !dh.empty() && !dh.native {
		msg := fmt.Sprintf("destination %s holds %s, not a kvaultfs vault; refusing to add a vault to it", dst, dh.describe())
		if len(dh.survey.KV) > 0 {
			msg += " (to copy into a KohakuVault table use --to kohakuvault)"
		}
		return res, fmt.Errorf("%w: %s", store.ErrInvalidArgument, msg)
	}

	st, err := os.Stat(src)
	if err != nil {
		return res, fmt.Errorf("source %s: %w", src, err)
	}
	mtime := st.ModTime().UnixNano()
	t, err := kohaku.Open(src, kohaku.Options{Table: o.Table, ReadOnly: true})
	if err != nil {
		return res, fmt.Errorf("source %s: %w", src, err)
	}
	defer t.Close()
	v, err := openVault(dst, o, false)
	if err != nil {
		return res, fmt.Errorf("destination %s: %w", dst, err)
	}
	defer func() {
		// Everything copied is committed; Sync makes it survive a power
		// loss before the caller (a script) removes the source.
		if serr := v.Sync(); err == nil && serr != nil {
			err = fmt.Errorf("destination %s: %w", dst, serr)
		}
		if cerr := v.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("destination %s: %w", dst, cerr)
		}
	}()

	f := forward{ctx: ctx, t: t, v: v, o: o, mtime: mtime, tr: tracker{fn: o.Progress}}
	if err := t.Scan("", "", 0, func(_ string, size int64) error {
		f.tr.p.TotalKeys++
		f.tr.p.TotalBytes += size
		return ctx.Err()
	}); err != nil {
		return res, f.stopped(fmt.Errorf("list source %s: %w", src, err))
	}
	f.res.Keys = f.tr.p.TotalKeys
	if err := t.Scan("", "", 0, f.key); err != nil {
		return f.res, f.stopped(err)
	}
	if err := f.extra(); err != nil {
		return f.res, f.stopped(err)
	}
	if len(f.skipped) > 0 {
		return f.res, fmt.Errorf("%w: %s left out of the native vault (every other key is copied and verified): %s",
			ErrSkipped, keys(int64(len(f.skipped))), listOf(f.skipped))
	}
	return f.res, nil
}

// forward is one run of Forward.
type forward struct {
	ctx     context.Context
	t       *kohaku.Table
	v       *vault.Vault
	o       Options
	mtime   int64
	tr      tracker
	res     Result
	skipped []string // keys left out, each with why: file/directory clashes, rewritten during every attempt
}

// stopped turns a cancellation into ErrInterrupted.
func (f *forward) stopped(err error) error {
	if f.ctx.Err() != nil {
		return interrupted(f.ctx.Err(), f.res)
	}
	return err
}

// key brings one key of the source up to date in the destination. The
// size the scan saw is not used: the value is sized again in once. A key
// KohakuVault deletes during the run is counted in Result.Vanished; one
// it rewrites to another length during every attempt is skipped.
func (f *forward) key(key string, _ int64) error {
	if err := f.ctx.Err(); err != nil {
		return err
	}
	f.tr.start(key)
	how, err := retryKey(f.ctx, func() error { return f.once(key) })
	switch {
	case how == keyGone:
		f.res.Vanished++
		f.tr.done(0)
	case how == keyChanged:
		f.skip(changedText(key, err))
		f.tr.done(0)
	case err != nil:
		return err
	}
	return nil
}

// skip leaves a key out, naming it and why in the ErrSkipped error.
func (f *forward) skip(why string) {
	f.skipped = append(f.skipped, why)
	f.res.Skipped++
}

// once is one attempt at a key: errSourceGone or errSourceChanged when
// KohakuVault deleted or rewrote it meanwhile, else done.
func (f *forward) once(key string) error {
	// Size again, outside the scan's batch: a KohakuVault writer may have
	// changed the value since.
	size, err := f.t.Size(key)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: %w", errSourceGone, err)
	}
	if err != nil {
		return err
	}
	equal, err := f.unchanged(key, size)
	if err != nil {
		return err
	}
	if equal {
		f.res.Unchanged++
		f.res.UnchangedBytes += size
		f.tr.done(size)
		return nil
	}
	hook("copy", key)
	sum, stored, err := copyValue(f.ctx, f.t, f.v, key, size, f.tr.bytes)
	switch {
	case isKeyClash(err):
		f.skip(fmt.Sprintf("%s (%v)", quoteKey(key), err))
		f.tr.done(size)
		return nil
	case stored && err != nil:
		// Cancelled once the value was stored: it gets its metadata now,
		// or the next run would find it unchanged and never set it. The
		// next run's comparison verifies it.
		if merr := f.setMeta(key); merr != nil {
			return merr
		}
		return err
	case errors.Is(err, errSourceGone) || errors.Is(err, errSourceChanged):
		return err
	case err != nil:
		return fmt.Errorf("copy %s: %w", quoteKey(key), err)
	}
	if err := verify(f.ctx, f.v, key, sum); err != nil {
		return err
	}
	if err := f.setMeta(key); err != nil {
		return err
	}
	f.res.Copied++
	f.res.CopiedBytes += size
	f.tr.done(size)
	return nil
}

// unchanged reports whether the destination already holds key's value:
// the same size and the same SHA-256, both streamed.
func (f *forward) unchanged(key string, size int64) (bool, error) {
	in, err := f.v.Stat(key)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil || in.Kind != store.KindFile || in.Size != size {
		return false, nil // a clash or another size: the copy says what is wrong
	}
	return sameValue(f.ctx, f.t, f.v, key, f.tr.bytes)
}

// setMeta gives a copied key its POSIX metadata: mode 0644 and the source
// file's mtime.
func (f *forward) setMeta(key string) error {
	in, err := f.v.Stat(key)
	if err != nil {
		return fmt.Errorf("stat %s after copying: %w", quoteKey(key), err)
	}
	mode := uint32(0o644)
	if _, err := f.v.SetAttr(in.ID, store.SetAttr{Mode: &mode, Mtime: &f.mtime}); err != nil {
		return fmt.Errorf("set mode and mtime of %s: %w", quoteKey(key), err)
	}
	return nil
}

// extra handles the keys of the destination that the source lacks: deleted
// with Options.Delete, else counted.
func (f *forward) extra() error {
	var gone []string
	for k, err := range f.v.Keys("") {
		if err != nil {
			return fmt.Errorf("list destination: %w", err)
		}
		if err := f.ctx.Err(); err != nil {
			return err
		}
		ok, err := f.t.Exists(k)
		if err != nil {
			return err
		}
		if !ok {
			gone = append(gone, k)
		}
	}
	if !f.o.Delete {
		f.res.Extra = int64(len(gone))
		return nil
	}
	// Deleted after the listing, not during it, so the listing's pages
	// never shift under it.
	for _, k := range gone {
		if err := f.ctx.Err(); err != nil {
			return err
		}
		if err := f.v.Delete(k); err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("delete %s from the destination: %w", quoteKey(k), err)
		}
		f.res.Deleted++
	}
	return nil
}

// isKeyClash reports an error of the native vault's tree: a key that
// would make a file a directory or the reverse, or a name too long.
func isKeyClash(err error) bool {
	return errors.Is(err, store.ErrNotDir) || errors.Is(err, store.ErrIsDir) || errors.Is(err, store.ErrNameTooLong)
}
