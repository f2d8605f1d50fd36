// Command mkvault creates an empty vault file with creation-time options
// that the kvaultfs CLI does not expose, so that benchmarks can mount
// variants of the store. The journal mode and page size are recorded in
// the file; kvaultfs mount keeps them.
//
// Usage:
//
//	mkvault [-wal=false] [-page-size N] DB
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/kohakuvault/kvaultfs/vault"
)

func main() {
	wal := flag.Bool("wal", true, "create the database in write-ahead-log mode (false: rollback journal)")
	pageSize := flag.Int("page-size", 0, "SQLite page size of the new file (0: the vault's default)")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: %s [-wal=false] [-page-size N] DB\n", filepath.Base(os.Args[0]))
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	if _, err := os.Stat(flag.Arg(0)); err == nil {
		log.Fatalf("%s exists; mkvault only creates new files", flag.Arg(0))
	}
	opts := vault.DefaultOptions()
	opts.EnableWAL = *wal
	opts.PageSize = *pageSize
	v, err := vault.Open(flag.Arg(0), opts)
	if err != nil {
		log.Fatal(err)
	}
	if err := v.Close(); err != nil {
		log.Fatal(err)
	}
}
