package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kohakuvault/kvaultfs/vault"
	"github.com/urfave/cli/v2"
)

// The vault options a command line can set. --table is accepted before
// the command (for every command) and after it; --chunk-size and the
// SQLite tuning flags (tuningFlags) on the commands that write: put, and
// mount, which may run for days and so deserves every knob.

// tableFlag is --table: which vault in the file.
func tableFlag() cli.Flag {
	return &cli.StringFlag{
		Name:  "table",
		Value: vault.DefaultTable,
		Usage: "which vault in the file: the prefix of a kvaultfs vault's table names (so one SQLite file can hold several vaults), or the name of a KohakuVault table (default: the file's only one)",
	}
}

// initFlag is --init: add a kvaultfs vault to an SQLite file that holds
// another program's tables, which is otherwise refused and left alone.
func initFlag() cli.Flag {
	return &cli.BoolFlag{
		Name:  "init",
		Usage: "add a kvaultfs vault to an SQLite file that holds tables of another program (refused without it; the other tables are never touched)",
	}
}

// boolFlag is flagValue for a bool flag: set in any context of the
// lineage counts.
func boolFlag(ctx *cli.Context, name string) bool {
	for _, c := range ctx.Lineage() {
		if slices.Contains(c.LocalFlagNames(), name) {
			return c.Bool(name)
		}
	}
	return false
}

// chunkSizeFlag is --chunk-size: how new data is split into chunk rows.
func chunkSizeFlag() cli.Flag {
	return &cli.StringFlag{
		Name:  "chunk-size",
		Value: formatSize(vault.DefaultChunkSize),
		Usage: "chunk size of new data: a multiple of 4K from 4K to 64M, like 256K, 1M or 1MiB (K/M/G/KiB/MiB/GiB are powers of 1024, KB/MB/GB of 1000)",
	}
}

// tuningFlags are the remaining vault.Options: how SQLite is set up.
// --page-size and --wal only apply when the command creates the file.
func tuningFlags() []cli.Flag {
	d := vault.DefaultOptions()
	return []cli.Flag{
		&cli.StringFlag{Name: "page-size", Value: formatSize(vault.DefaultPageSize), Usage: "SQLite page size of a new database file, a power of two from 512 to 64K (an existing file keeps its own; a different explicit value is an error)"},
		&cli.BoolFlag{Name: "wal", Value: d.EnableWAL, Usage: "put a new database file in write-ahead-log mode (--wal=false: rollback journal); an existing file keeps its mode"},
		&cli.StringFlag{Name: "mmap-size", Value: formatSize(d.MmapSize), Usage: "how much of the database file SQLite reads through mmap (0: none)"},
		&cli.StringFlag{Name: "sqlite-cache", Value: formatSize(int64(d.CacheKB) << 10), Usage: "SQLite page cache per connection (at least 1K)"},
		&cli.DurationFlag{Name: "busy-timeout", Value: d.BusyTimeout, Usage: "how long SQLite waits for another process's lock before the retries start (at most 1h)"},
		&cli.IntFlag{Name: "retries", Value: d.Retries, Usage: "retries of a write that finds the database busy, with exponential backoff, before it fails (0 to 30)"},
		&cli.DurationFlag{Name: "backoff-base", Value: d.BackoffBase, Usage: "delay before the first retry; each retry doubles it (at most 1m)"},
	}
}

// Limits of vault.Options that the CLI checks itself, so that a bad value
// is reported against the flag that set it rather than as an option name
// the user never typed. vault.Open validates them again.
const (
	minChunkSize = 4 << 10
	maxChunkSize = 64 << 20
)

var identifierRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

// flagValue returns the value of a string flag from the innermost context
// that set it, so "kvaultfs --table t ls" and "kvaultfs ls --table t"
// mean the same, and the command's own setting wins over the global one.
func flagValue(ctx *cli.Context, name string) string {
	for _, c := range ctx.Lineage() {
		if slices.Contains(c.LocalFlagNames(), name) {
			return c.String(name)
		}
	}
	return ctx.String(name)
}

// badFlag reports an unusable flag value as a usage error naming the flag.
func badFlag(ctx *cli.Context, name, value, why string) error {
	return usageError(ctx, "invalid value %q for flag --%s: %s", value, name, why)
}

// vaultOptions builds the options for ctx's command from its flags.
func vaultOptions(ctx *cli.Context, readOnly bool) (*vault.Options, error) {
	o := vault.DefaultOptions()
	o.ReadOnly = readOnly
	o.Init = boolFlag(ctx, "init")
	o.Table = flagValue(ctx, "table")
	if !identifierRE.MatchString(o.Table) {
		return nil, badFlag(ctx, "table", o.Table, "must be an SQL identifier: a letter or _, then letters, digits or _, at most 64")
	}
	if hasFlag(ctx, "chunk-size") {
		s := flagValue(ctx, "chunk-size")
		n, err := parseSize(s)
		if err != nil {
			return nil, badFlag(ctx, "chunk-size", s, err.Error())
		}
		if n < minChunkSize || n > maxChunkSize || n%4096 != 0 {
			return nil, badFlag(ctx, "chunk-size", s, fmt.Sprintf("is %d bytes; must be a multiple of 4096 from 4K to 64M", n))
		}
		o.ChunkSize = int(n)
	}
	if hasFlag(ctx, "page-size") {
		if err := tuningOptions(ctx, o); err != nil {
			return nil, err
		}
	}
	return o, nil
}

// tuningOptions sets o from the flags of tuningFlags, checking each
// against the limits vault.Open enforces.
func tuningOptions(ctx *cli.Context, o *vault.Options) error {
	if ctx.IsSet("page-size") {
		s := ctx.String("page-size")
		n, err := parseSize(s)
		if err != nil {
			return badFlag(ctx, "page-size", s, err.Error())
		}
		if n < 512 || n > 65536 || n&(n-1) != 0 {
			return badFlag(ctx, "page-size", s, fmt.Sprintf("is %d bytes; must be a power of two from 512 to 64K", n))
		}
		o.PageSize = int(n)
	}
	o.EnableWAL = ctx.Bool("wal")
	s := ctx.String("mmap-size")
	n, err := parseSize(s)
	if err != nil {
		return badFlag(ctx, "mmap-size", s, err.Error())
	}
	o.MmapSize = n
	s = ctx.String("sqlite-cache")
	if n, err = parseSize(s); err != nil {
		return badFlag(ctx, "sqlite-cache", s, err.Error())
	}
	if n < 1<<10 || n > 1<<40 {
		return badFlag(ctx, "sqlite-cache", s, "must be from 1K to 1T")
	}
	o.CacheKB = int(n >> 10)
	if o.BusyTimeout = ctx.Duration("busy-timeout"); o.BusyTimeout < 0 || o.BusyTimeout > time.Hour {
		return badFlag(ctx, "busy-timeout", o.BusyTimeout.String(), "must be from 0 to 1h")
	}
	if o.Retries = ctx.Int("retries"); o.Retries < 0 || o.Retries > 30 {
		return badFlag(ctx, "retries", strconv.Itoa(o.Retries), "must be from 0 to 30")
	}
	if o.BackoffBase = ctx.Duration("backoff-base"); o.BackoffBase < 0 || o.BackoffBase > time.Minute {
		return badFlag(ctx, "backoff-base", o.BackoffBase.String(), "must be from 0 to 1m")
	}
	return nil
}

// hasFlag reports whether ctx's command (or the app) defines the flag.
func hasFlag(ctx *cli.Context, name string) bool {
	for _, c := range ctx.Lineage() {
		if c.Command == nil {
			continue
		}
		for _, f := range c.Command.Flags {
			if slices.Contains(f.Names(), name) {
				return true
			}
		}
	}
	return false
}

// How a command opens its vault.
type openMode int

const (
	openRead   openMode = iota // read-only; the file must exist
	openWrite                  // writable; the file must exist
	openCreate                 // writable; a missing file is created
)

// openVault opens the vault at db for ctx's command. Only openCreate may
// create the file: a mistyped path given to get, ls or rm must be an
// error, not a new empty vault left behind.
func openVault(ctx *cli.Context, db string, mode openMode) (*vault.Vault, error) {
	o, err := vaultOptions(ctx, mode == openRead)
	if err != nil {
		return nil, err
	}
	if mode != openCreate {
		if _, err := os.Stat(db); err != nil {
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err // "DB: no such file or directory", not "stat DB: ..."
			}
			return nil, fmt.Errorf("%s: %w", db, err)
		}
	}
	return vault.Open(db, o)
}

// closeVault closes v, keeping the first error: a failed Close after a
// put means the data may not be complete in the .db file.
func closeVault(v *vault.Vault, err *error) {
	if cerr := v.Close(); *err == nil {
		*err = cerr
	}
}

// closeCommitted closes v after a command that committed its change
// (and made it durable): a failure of Close then is a warning, never the
// command's failure, since the change is in the database (the final
// checkpoint of a nearly full disk, say, leaves it in the WAL).
func closeCommitted(ctx *cli.Context, v *vault.Vault, err *error) {
	cerr := v.Close()
	switch {
	case cerr == nil:
	case *err == nil:
		fmt.Fprintf(ctx.App.ErrWriter, "kvaultfs: warning: %v (the change is committed and on disk)\n", cerr)
	}
}

// syncCommitted makes what v committed durable. Vault.Sync commits an
// empty change so that SQLite fsyncs the log, which needs room on the
// disk; on a full disk the files are fsynced directly instead, which
// makes the same frames durable.
func syncCommitted(v *vault.Vault) error {
	err := v.Sync()
	if err == nil || !errors.Is(err, vault.ErrNoSpace) {
		return err
	}
	for _, p := range []string{v.Path() + "-wal", v.Path()} {
		f, oerr := os.Open(p)
		if errors.Is(oerr, fs.ErrNotExist) {
			continue
		}
		if oerr != nil {
			return fmt.Errorf("%w; fsync: %v", err, oerr)
		}
		serr := f.Sync()
		f.Close()
		if serr != nil {
			return fmt.Errorf("%w; fsync %s: %v", err, p, serr)
		}
	}
	return nil
}

// sizeUnits maps a size suffix to its multiplier. Bare K, M and G are
// binary, as they are for dd, since chunk sizes are powers of two; the
// SI spellings keep their SI meaning rather than surprising anyone.
var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"k": 1 << 10, "ki": 1 << 10, "kib": 1 << 10, "kb": 1000,
	"m": 1 << 20, "mi": 1 << 20, "mib": 1 << 20, "mb": 1000 * 1000,
	"g": 1 << 30, "gi": 1 << 30, "gib": 1 << 30, "gb": 1000 * 1000 * 1000,
}

// parseSize reads a byte count like 4096, 256K, 1M or 1MiB.
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return r < '0' || r > '9' })
	if i < 0 {
		i = len(t)
	}
	mult, ok := sizeUnits[strings.ToLower(strings.TrimSpace(t[i:]))]
	if i == 0 || !ok {
		return 0, errors.New("want a size like 256K, 1M or 1MiB")
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil || n > (1<<62)/mult {
		return 0, errors.New("size out of range")
	}
	return n * mult, nil
}

// formatSize writes n in the largest binary unit that divides it.
func formatSize(n int64) string {
	switch {
	case n != 0 && n%(1<<30) == 0:
		return strconv.FormatInt(n>>30, 10) + "G"
	case n != 0 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "M"
	case n != 0 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + "K"
	}
	return strconv.FormatInt(n, 10)
}
