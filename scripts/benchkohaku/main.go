// Command benchkohaku runs one job of scripts/bench-kohaku.sh: a large
// value in a KohakuVault file (format C, served by package kohaku) or the
// same bytes in a native vault, and prints the report of a run. Each job
// is one process, so that memory figures and Go heaps do not carry over
// from one job to the next.
//
//	benchkohaku [flags] JOB SIDE [SIZE]   run a job, print result lines
//	benchkohaku [flags] report FILE       print the table of a run's results
//
// Result lines read "R rep job variant value unit", as benchvault's do,
// so that one report reads both kinds of line the same way.
package main

import (
	"database/sql"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	_ "github.com/mattn/go-sqlite3" // the "sqlite3" driver, for creating the KohakuVault file

	"github.com/kohakuvault/kvaultfs/kohaku"
	"github.com/kohakuvault/kvaultfs/vault"
)

var (
	dir     = flag.String("dir", os.TempDir(), "directory for the files")
	rep     = flag.Int("rep", 1, "repetition number, printed in result lines")
	sizeMB  = flag.Int64("mb", 900, "size of the large value in MB (10^6 bytes), at most 1000 (KohakuVault's limit)")
	divisor = flag.Int64("small-div", 4, "the small value is the large one divided by this")
	reads   = flag.Int("reads", 100, "random 1 MiB reads per pass of the readat job")
)

// key is where both sides keep the value.
const key = "videos/big.mp4"

func main() {
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: benchkohaku [flags] JOB SIDE [SIZE] | benchkohaku [flags] report FILE\n\n%s\nflags:\n", jobHelp)
		flag.PrintDefaults()
	}
	flag.Parse()
	args := flag.Args()
	if len(args) < 2 || len(args) > 3 {
		flag.Usage()
		os.Exit(2)
	}
	var err error
	switch {
	case *sizeMB <= 0 || *sizeMB*1e6 > kohaku.MaxValueSize:
		err = fmt.Errorf("-mb %d: must be 1 to %d", *sizeMB, int64(kohaku.MaxValueSize/1_000_000))
	case *divisor < 1 || *sizeMB*1e6 / *divisor <= 1<<20:
		err = fmt.Errorf("-small-div %d: the small value must be over 1 MiB (a streamed value)", *divisor)
	case *reads < 1:
		err = fmt.Errorf("-reads %d: must be at least 1", *reads)
	case args[0] == "report" && len(args) == 2:
		err = report(args[1])
	default:
		size := "big"
		if len(args) == 3 {
			size = args[2]
		}
		err = runJob(args[0], args[1], size)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchkohaku: %v\n", err)
		os.Exit(1)
	}
}

const jobHelp = `jobs (SIDE is kohaku or native; SIZE is big, the default, or small):
  put    SIDE SIZE  stream the value into a new file with PutReader, timed to Close
  get    SIDE SIZE  stream it out with GetTo, cold (page cache dropped) then warm
  readat SIDE       random 1 MiB ReadAt of the big value: cold, then warm after one full read
Run put before get and readat: they read the file put wrote.`

func runJob(job, side, size string) error {
	if side != "kohaku" && side != "native" {
		return fmt.Errorf("unknown side %q (kohaku or native)", side)
	}
	n, err := valueSize(size)
	if err != nil {
		return err
	}
	switch job {
	case "put":
		return put(side, size, n)
	case "get":
		return get(side, size, n)
	case "readat":
		if size != "big" {
			return fmt.Errorf("readat reads the big value only")
		}
		return readAt(side, n)
	}
	return fmt.Errorf("unknown job %q", job)
}

// valueSize returns the length in bytes of the big or small value.
func valueSize(size string) (int64, error) {
	switch size {
	case "big":
		return *sizeMB * 1e6, nil
	case "small":
		return *sizeMB * 1e6 / *divisor, nil
	}
	return 0, fmt.Errorf("unknown size %q (big or small)", size)
}

// path is the file of a side and size.
func path(side, size string) string {
	return filepath.Join(*dir, side+"-"+size+".db")
}

func removeDB(path string) {
	for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
		os.Remove(path + suffix)
	}
}

// The spec's statements for a format-C file (docs/kohakuvault-format.md 5.1,
// 4), byte for byte with {t} = kv: kohakuvault_meta first, as
// KVault.__init__ of v0.7+ runs them.
const (
	createMeta = "CREATE TABLE IF NOT EXISTS kohakuvault_meta (\n" +
		"                key TEXT PRIMARY KEY,\n" +
		"                value TEXT NOT NULL\n" +
		"            );"
	createKV = "\n" +
		"            CREATE TABLE IF NOT EXISTS kv (\n" +
		"                key   BLOB PRIMARY KEY NOT NULL,\n" +
		"                value BLOB NOT NULL\n" +
		"            );\n" +
		"            "
)

// createKohaku makes a new, empty KohakuVault file as KVault's
// open_connection does (spec 2.1): page size 32768 before anything else,
// then WAL, then the tables, on one connection.
func createKohaku(path string) error {
	db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=5000")
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	for _, s := range []string{
		"PRAGMA page_size=32768",
		"PRAGMA journal_mode='WAL'",
		"PRAGMA wal_autocheckpoint=1000",
		createMeta,
		createKV,
	} {
		if _, err := db.Exec(s); err != nil {
			return fmt.Errorf("create %s: %s: %w", path, s, err)
		}
	}
	return db.Close()
}

// openVault opens the side's file through the vault dict API: vault.Open
// serves a KohakuVault file's table, and makes a native vault of a new
// path.
func openVault(side, size string) (*vault.Vault, error) {
	v, err := vault.Open(path(side, size), vault.DefaultOptions())
	if err != nil {
		return nil, err
	}
	if _, _, isKohaku := v.Kohaku(); isKohaku != (side == "kohaku") {
		v.Close()
		return nil, fmt.Errorf("%s: opened as the wrong kind of file (KohakuVault: %v)", path(side, size), isKohaku)
	}
	return v, nil
}
