package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/kohakuvault/kvaultfs/vault"
	"github.com/urfave/cli/v2"
)

// Exit codes. Scripts tell "the command was used wrongly" from "the
// command ran and failed"; verify also uses exitUsage for "could not check".
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// verifyCode is verify's exit code for an error that stopped the check:
// a database SQLite finds malformed (a file cut short, say) is damage
// found, exitFailure; anything else means the check could not run.
func verifyCode(err error) int {
	if errors.Is(err, vault.ErrCorrupt) {
		return exitFailure
	}
	return exitUsage
}

// exitError carries the exit code an error should end the process with.
type exitError struct {
	code int
	err  error
}

// Error returns the message of the wrapped error.
func (e *exitError) Error() string { return e.err.Error() }

// Unwrap returns the wrapped error, for errors.Is and errors.As.
func (e *exitError) Unwrap() error { return e.err }

// withCode gives err an exit code other than exitFailure.
func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
}

// usageError reports a command line that cannot be right, pointing at the
// help of the command it was meant for.
func usageError(ctx *cli.Context, format string, args ...any) error {
	name := "kvaultfs"
	if ctx != nil && ctx.Command != nil && ctx.Command.HelpName != "" {
		name = ctx.Command.HelpName
	}
	msg := fmt.Sprintf(format, args...)
	return withCode(exitUsage, fmt.Errorf("%s (see '%s --help')", msg, name))
}

// onUsageError turns a flag the parser rejected into a usage error,
// instead of urfave/cli's "Incorrect Usage" and a help page.
func onUsageError(ctx *cli.Context, err error, _ bool) error {
	return usageError(ctx, "%v", err)
}

// checkArgs fails unless the command got between min and max arguments.
func checkArgs(ctx *cli.Context, min, max int) error {
	n := ctx.NArg()
	switch {
	case n >= min && n <= max:
		return nil
	case max == 0:
		return usageError(ctx, "%s takes no arguments, got %s", ctx.Command.Name, count(int64(n), "argument"))
	}
	return usageError(ctx, "%s needs %s, got %s", ctx.Command.Name, ctx.Command.ArgsUsage, count(int64(n), "argument"))
}

// count writes "1 thing" or "n things".
func count(n int64, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

// report prints err as one line on stderr and returns the exit code.
// Messages can carry newlines (SQLite's integrity reports, paths, keys);
// they are folded so that one error is always one line.
func report(stderr io.Writer, err error) int {
	if err == nil {
		return exitOK
	}
	code := exitFailure
	var ee *exitError
	var ce cli.ExitCoder
	switch {
	case errors.As(err, &ee):
		code = ee.code
	case errors.As(err, &ce):
		code = exitUsage // only urfave/cli's own help makes these: "help" of an unknown topic
	}
	msg := strings.TrimSpace(err.Error())
	msg = strings.NewReplacer("\r\n", `\n`, "\n", `\n`, "\r", `\r`).Replace(msg)
	fmt.Fprintf(stderr, "kvaultfs: %s\n", msg)
	return code
}
