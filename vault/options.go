package vault

import (
	"fmt"
	"regexp"
	"time"
)

// Defaults for Options. ChunkSize and PageSize were chosen with
// BenchmarkChunkSize (vault/bench_test.go) and scripts/bench-vault.sh.
const (
	// DefaultChunkSize is the chunk size of new files. A read fetches,
	// copies and checksums whole chunks, so small chunks make random reads
	// cheap, while per-row overhead is too small to make big ones stream
	// much faster. BenchmarkChunkSize, 16 KiB pages, medians of 4
	// interleaved runs on a 2-core VM, 64 KiB vs 256 KiB (vs 1 MiB):
	// streamed put 395 vs 395 (356) MB/s, streamed get 2002 vs 1860
	// (1456) MB/s, 4 KiB random read 97 vs 177 (590) us; after churn,
	// with the page cache dropped: streamed get 237 vs 218 (227) MB/s,
	// 4 KiB read 1.67 vs 1.80 (2.24) ms, 16 KiB value 1.62 vs 1.58 (1.69)
	// ms. The price, from scripts/bench-vault.sh and 1 MiB ReadAt runs: a
	// 1 GiB put to Close is as fast with WAL (322-334 vs 309-373 MB/s)
	// but up to 20% slower without (191-301 vs 237-291 MB/s), and long
	// sequential reads are about 10% slower (1 MiB ReadAt 1.9-2.2 vs
	// 2.2-2.4 GB/s).
	DefaultChunkSize = 64 << 10
	// DefaultPageSize is the SQLite page size of new database files.
	// Streaming costs CPU per page (a WAL frame, a syscall): 4 KiB pages
	// take 1.5-2x the CPU of 16 KiB per streamed byte. 64 KiB pages stream
	// faster still (put 481 vs 395 MB/s at 256 KiB chunks, 412 vs 395 at
	// 64 KiB) and read cold 16 KiB values 14% faster, but every commit
	// writes whole pages: a 1 KiB Put writes 624 KiB with 64 KiB pages,
	// 165 KiB with 16 KiB and 47 KiB with 4 KiB (and takes 861, 582 and
	// 469 us of CPU), and a 64 KiB chunk wastes 12% of a 64 KiB page.
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
	// letters, digits or underscores, at most 64 bytes. In a KohakuVault
	// file it names the KohakuVault table to serve; left at DefaultTable,
	// the file's only KohakuVault table is served.
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
	// Init lets Open add a kvaultfs vault to an SQLite file that holds
	// tables of another program (and no vault of either kind). Without
	// it such a file is refused and left unchanged.
	Init bool
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
