package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/kohakuvault/kvaultfs/migrate"
	"github.com/kohakuvault/kvaultfs/vault"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
)

// migrateCommand is "kvaultfs migrate [--to kohakuvault] SRC.db DST.db".
func migrateCommand() *cli.Command {
	return &cli.Command{
		Name:      "migrate",
		Usage:     "copy a KohakuVault table into a kvaultfs vault, or a kvaultfs vault into a KohakuVault table",
		ArgsUsage: "SRC.db DST.db",
		Description: "Copies every key of the KohakuVault table in SRC into the kvaultfs vault DST\n" +
			"(created if missing; an existing vault is updated). With --to kohakuvault,\n" +
			"copies the kvaultfs vault SRC into a KohakuVault table in DST: an existing\n" +
			"KohakuVault file, or a new file made as KohakuVault 0.8 makes it.\n\n" +
			"Values are streamed (any size, constant memory) and each is verified after\n" +
			"it is written: its SHA-256 read back from DST must equal SRC's. SRC is only\n" +
			"read. A second run writes only values that changed (same size and SHA-256:\n" +
			"unchanged, so both files are read but nothing is written for them). Keys\n" +
			"only in DST are left alone unless --delete. Copied keys get mode 0644 and\n" +
			"SRC's modification time. Values a KohakuVault table cannot hold (over\n" +
			"1,000,000,000 bytes; in a B/C table, values starting with the bytes 89 4B)\n" +
			"refuse the run before anything is written, naming their keys. Ctrl-C stops\n" +
			"between keys: every key holds its old or its new value.\n\n" +
			"Another program may write SRC meanwhile: a key it deletes during the run is\n" +
			"passed over and counted; a key it rewrites while it is copied is tried\n" +
			"again, then, after 3 attempts, skipped and named (exit status 1), the rest\n" +
			"still copied.\n\n" +
			"A progress line goes to stderr when it is a terminal (not with --quiet);\n" +
			"the summary goes to stdout.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "to", Value: "kvaultfs", Usage: "what DST is: kvaultfs (a native vault) or kohakuvault (a KohakuVault table)"},
			&cli.StringFlag{Name: "table", Usage: "the KohakuVault table, in SRC or (with --to kohakuvault) in DST (default: the only one in the file; kv in a new file)"},
			&cli.StringFlag{Name: "vault-table", Value: vault.DefaultTable, Usage: "table prefix of the kvaultfs vault (an SQL identifier)"},
			&cli.BoolFlag{Name: "delete", Usage: "delete keys that DST holds and SRC does not"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress line"},
		},
		Action: runMigrate,
	}
}

func runMigrate(ctx *cli.Context) error {
	if err := checkArgs(ctx, 2, 2); err != nil {
		return err
	}
	src, dst := ctx.Args().Get(0), ctx.Args().Get(1)
	o := migrate.Options{
		Table:      flagValue(ctx, "table"),
		VaultTable: ctx.String("vault-table"),
		Delete:     ctx.Bool("delete"),
	}
	if o.Table != "" && !identifierRE.MatchString(o.Table) {
		return badFlag(ctx, "table", o.Table, "must be an SQL identifier: a letter or _, then letters, digits or _, at most 64")
	}
	if !identifierRE.MatchString(o.VaultTable) {
		return badFlag(ctx, "vault-table", o.VaultTable, "must be an SQL identifier: a letter or _, then letters, digits or _, at most 64")
	}
	run := migrate.Forward
	switch to := strings.ToLower(ctx.String("to")); to {
	case "kvaultfs", "vault", "native":
	case "kohakuvault", "kohaku":
		run = migrate.Back
	default:
		return badFlag(ctx, "to", ctx.String("to"), "must be kvaultfs or kohakuvault")
	}
	var p *progressLine
	if !ctx.Bool("quiet") && isTerminal(ctx.App.ErrWriter) {
		p = &progressLine{w: ctx.App.ErrWriter}
		o.Progress = p.update
	}
	// Ctrl-C and SIGTERM stop the run between keys. The first one also
	// restores the default handling, so a second one kills the process.
	sctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(sctx, stop)
	res, err := run(sctx, src, dst, o)
	p.clear()
	if err == nil || errors.Is(err, migrate.ErrSkipped) {
		fmt.Fprintln(ctx.App.Writer, res.Summary())
	}
	return err
}

// isTerminal reports whether w is a terminal (TCGETS succeeds on it), so
// that a progress line never ends up in a log file or a pipe.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// progressLine redraws one line on a terminal, at most every
// progressEvery, and clears it at the end.
type progressLine struct {
	w     io.Writer
	last  time.Time
	shown bool
}

const progressEvery = 200 * time.Millisecond

func (p *progressLine) update(pr migrate.Progress) {
	now := time.Now()
	if now.Sub(p.last) < progressEvery && pr.Keys != pr.TotalKeys {
		return
	}
	p.last = now
	pct := 100.0
	if pr.TotalBytes > 0 {
		pct = 100 * float64(pr.Bytes) / float64(pr.TotalBytes)
	}
	fmt.Fprintf(p.w, "\r\033[Kmigrate: %d/%d keys, %s/%s (%.0f%%)", pr.Keys, pr.TotalKeys,
		humanSize(pr.Bytes), humanSize(pr.TotalBytes), pct)
	p.shown = true
}

// clear removes the progress line so that an error or the shell prompt
// starts on a clean line. A nil p (no progress) does nothing.
func (p *progressLine) clear() {
	if p != nil && p.shown {
		fmt.Fprint(p.w, "\r\033[K")
	}
}

// humanSize writes n bytes in the largest binary unit below it.
func humanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, u := float64(n)/unit, 0
	for v >= unit && u < 4 {
		v /= unit
		u++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTP"[u])
}
