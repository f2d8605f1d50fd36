package main

import (
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"
)

// putCommand is "kvaultfs put DB KEY [FILE|-]".
func putCommand() *cli.Command {
	return &cli.Command{
		Name:      "put",
		Usage:     "store a file (or stdin) under a key",
		ArgsUsage: "DB KEY [FILE|-]",
		Description: "Stores FILE, or standard input when FILE is omitted or -, under KEY in the\n" +
			"vault DB, replacing any previous value. DB is created if it does not exist\n" +
			"(its directory must). The data is streamed, so a file of any size needs no\n" +
			"more memory than a small one; a put that fails leaves the old value whole.\n" +
			"The value is on disk (fsynced) when put returns.",
		Flags:  append([]cli.Flag{tableFlag(), initFlag(), chunkSizeFlag()}, tuningFlags()...),
		Action: runPut,
	}
}

func runPut(ctx *cli.Context) (err error) {
	if err := checkArgs(ctx, 2, 3); err != nil {
		return err
	}
	db, key, file := ctx.Args().Get(0), ctx.Args().Get(1), ctx.Args().Get(2)
	src, size, err := openSource(ctx, file)
	if err != nil {
		return err
	}
	defer src.Close()
	v, err := openVault(ctx, db, openCreate)
	if err != nil {
		return err
	}
	defer closeCommitted(ctx, v, &err)
	if err := v.PutReader(key, src, size); err != nil {
		return err
	}
	// A committed put survives a crash of this process but not a power
	// loss; a script that deletes its source after "put" needs the latter.
	return syncCommitted(v)
}

// openSource opens what put reads: FILE, or stdin for "" and "-". The
// size is known only for a regular file; -1 lets the vault stream to the
// end, which is what a pipe, a FIFO or a terminal needs.
func openSource(ctx *cli.Context, file string) (io.ReadCloser, int64, error) {
	if file == "" || file == "-" {
		return io.NopCloser(ctx.App.Reader), -1, nil
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if st.IsDir() {
		f.Close()
		return nil, 0, fmt.Errorf("%s: is a directory", file)
	}
	if !st.Mode().IsRegular() {
		return f, -1, nil
	}
	return f, st.Size(), nil
}
