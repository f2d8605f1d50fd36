package vault

import (
	"fmt"
	"regexp"
	"time"
)

// Defaults for Options. ChunkSize and PageSize were chosen by
// scripts/bench-vault.sh and BenchmarkChunkSize; the README has the figures.
const (
	// DefaultChunkSize is the chunk size of new files: large enough that
	// streaming is dominated by copying rather than per-row overhead, small
	// enough that a 4 KiB random read (which must read and verify a whole
	// chunk) stays cheap.
	DefaultChunkSize = 256 << 10
	// DefaultPageSize is the SQLite page size of new database files.
	DefaultPageSize = 16 << 10
	// DefaultRetries is how many times a write that finds the database
	// busy is retried after busy_timeout has expired.
	DefaultRetries = 4
	// DefaultBackoffBase is the first retry delay; each retry doubles it.
	DefaultBackoffBase = 20 * time.Millisecond
	// DefaultTable is the prefix of the vault's table names.
	DefaultTable = "kvault"
	// DefaultMmapSize is how much of the database file SQLite maps.
	DefaultMmapSize = 256 << 20
	// DefaultCacheKB is SQLite's page cache per connection, in KiB.
	DefaultCacheKB = 8 << 10
	// DefaultBusyTimeout is how long SQLite waits on a lock held by
	// another connection before a write reports busy.
	DefaultBusyTimeout = 5 * time.Second
)

// Limits enforced by Options.validate.
const (
	minChunkSize = 4 << 10
	maxChunkSize = 64 << 20
)

// Options configure Open. Start from DefaultOptions and change what you
// need: a field left at its zero value means zero, not "default", and zero
// is invalid for ChunkSize, CacheKB and Table.
type Options struct {
	// ChunkSize is the size in bytes of the chunks that new files are
	// split into: a multiple of 4096 between 4 KiB and 64 MiB. Every file
	// records the chunk size it was written with, so changing this never
	// affects existing files.
	ChunkSize int
	// Retries is how many times a write that finds the database busy
	// (another process is writing) is retried, with exponential backoff
	// starting at BackoffBase, before it fails with ErrBusy.
	Retries int
	// BackoffBase is the delay before the first retry.
	BackoffBase time.Duration
	// Table prefixes every table name, so one SQLite file can hold several
	// vaults. It must be an SQL identifier: a letter or underscore, then
	// letters, digits or underscores, at most 64 bytes.
	Table string
	// EnableWAL puts a newly created database in write-ahead-log mode.
	// Like PageSize it only applies when the file is created: an existing
	// file keeps its journal mode.
	EnableWAL bool
	// PageSize is the SQLite page size of a newly created database, a
	// power of two from 512 to 65536, or 0 for DefaultPageSize. An existing
	// file keeps its own page size; a non-zero PageSize that differs from
	// it is an error rather than being silently ignored.
	PageSize int
	// MmapSize is how many bytes of the file SQLite reads through mmap
	// (0 disables mmap).
	MmapSize int64
	// CacheKB is SQLite's page cache size per connection, in KiB.
	CacheKB int
	// BusyTimeout is how long SQLite itself waits for a lock before the
	// Retries start.
	BusyTimeout time.Duration
	// ReadOnly opens the vault without ever writing to the file. A file or
	// directory that is not writable is opened read-only even without it.
	ReadOnly bool
}

// DefaultOptions returns the options Open uses when given nil.
func DefaultOptions() *Options {
	return &Options{
		ChunkSize:   DefaultChunkSize,
		Retries:     DefaultRetries,
		BackoffBase: DefaultBackoffBase,
		Table:       DefaultTable,
		EnableWAL:   true,
		PageSize:    0,
		MmapSize:    DefaultMmapSize,
		CacheKB:     DefaultCacheKB,
		BusyTimeout: DefaultBusyTimeout,
	}
}

var identifierRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

// validate reports the first invalid option as ErrInvalidArgument, naming it.
func (o *Options) validate() error {
	bad := func(name string, value any, why string) error {
		return fmt.Errorf("%w: option %s = %v: %s", ErrInvalidArgument, name, value, why)
	}
	switch {
	case o.ChunkSize < minChunkSize || o.ChunkSize > maxChunkSize || o.ChunkSize%4096 != 0:
		return bad("ChunkSize", o.ChunkSize, "must be a multiple of 4096 between 4 KiB and 64 MiB")
	case o.Retries < 0 || o.Retries > 30:
		return bad("Retries", o.Retries, "must be between 0 and 30")
	case o.BackoffBase < 0 || o.BackoffBase > time.Minute:
		return bad("BackoffBase", o.BackoffBase, "must be between 0 and 1m")
	case !identifierRE.MatchString(o.Table):
		return bad("Table", fmt.Sprintf("%q", o.Table), "must be an SQL identifier (letter or _, then letters, digits or _, at most 64)")
	case o.PageSize != 0 && (o.PageSize < 512 || o.PageSize > 65536 || o.PageSize&(o.PageSize-1) != 0):
		return bad("PageSize", o.PageSize, "must be 0 or a power of two from 512 to 65536")
	case o.MmapSize < 0:
		return bad("MmapSize", o.MmapSize, "must not be negative")
	case o.CacheKB <= 0 || o.CacheKB > 1<<30:
		return bad("CacheKB", o.CacheKB, "must be positive")
	case o.BusyTimeout < 0 || o.BusyTimeout > time.Hour:
		return bad("BusyTimeout", o.BusyTimeout, "must be between 0 and 1h")
	}
	return nil
}
