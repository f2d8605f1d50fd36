// Command kvaultfs stores files in a vault (one SQLite file), reads them
// back, and mounts the vault as a file system.
//
// Every form is fixed so that scripts can rely on it:
//
//	kvaultfs put DB KEY [FILE|-]
//	kvaultfs get DB KEY [FILE|-]
//	kvaultfs ls [-0] DB [PREFIX]
//	kvaultfs rm DB KEY
//	kvaultfs stat DB KEY
//	kvaultfs verify DB
//	kvaultfs version
//	kvaultfs mount [--daemon] [flags] DB MOUNTPOINT
//	kvaultfs unmount [--lazy] MOUNTPOINT
//
// An error is one line on stderr, "kvaultfs: <message>", with exit code 1;
// a usage error (wrong arguments, unknown or bad flags) exits with 2.
// verify exits 1 when it finds damage and 2 when the check cannot run.
package main

import (
	"io"
	"os"

	"github.com/urfave/cli/v2"
)

func main() {
	os.Exit(run(os.Args, os.Stdin, os.Stdout, os.Stderr))
}

// commands lists the app's commands in the order --help shows them. Each
// is defined in its own file (mount and unmount in mount.go).
func commands() []*cli.Command {
	return []*cli.Command{
		putCommand(),
		getCommand(),
		lsCommand(),
		rmCommand(),
		statCommand(),
		verifyCommand(),
		versionCommand(),
		mountCommand(),
		unmountCommand(),
		migrateCommand(),
	}
}

// run executes the command line args and returns the exit code. All
// output goes through the given streams so that nothing but main touches
// the process's exit.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	err := newApp(stdin, stdout, stderr).Run(args)
	return report(stderr, err)
}

// newApp assembles the app. urfave/cli's own error handling is switched
// off (ExitErrHandler, OnUsageError) because it exits from inside Run and
// prints whole help pages on a mistyped flag; run reports every error as
// one line instead.
func newApp(stdin io.Reader, stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:  "kvaultfs",
		Usage: "keep files as keys in one SQLite file",
		Description: "A vault is one SQLite file holding any number of keys, each a file of any size.\n" +
			"Keys that are paths (clips/2024/a.mp4) form a directory tree; any other key is\n" +
			"kept whole. Commands that only read (get, ls, stat, verify) open the vault\n" +
			"read-only and never create it; put and mount create a missing vault.\n\n" +
			"Errors are one line on stderr with exit code 1; usage errors exit with 2.",
		Commands:        commands(),
		Flags:           []cli.Flag{tableFlag(), initFlag()},
		Reader:          stdin,
		Writer:          stdout,
		ErrWriter:       stderr,
		HideVersion:     true, // "kvaultfs version" is the one way to ask
		HideHelpCommand: false,
		ExitErrHandler:  func(*cli.Context, error) {},
		OnUsageError:    onUsageError,
		Action: func(ctx *cli.Context) error {
			if ctx.Args().Present() {
				return usageError(ctx, "unknown command %q", ctx.Args().First())
			}
			return usageError(ctx, "no command given")
		},
	}
	for _, c := range app.Commands {
		c.OnUsageError = onUsageError
	}
	return app
}
