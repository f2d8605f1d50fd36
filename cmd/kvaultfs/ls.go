package main

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
)

// lsCommand is "kvaultfs ls [-0] DB [PREFIX]".
func lsCommand() *cli.Command {
	return &cli.Command{
		Name:      "ls",
		Usage:     "list keys",
		ArgsUsage: "DB [PREFIX]",
		Description: "Lists the keys of the vault DB that start with PREFIX (all keys without it),\n" +
			"path keys first in path order, then other keys in byte order.\n\n" +
			"One key is printed a line. A key that holds a newline, a control or\n" +
			"non-UTF-8 byte, a double quote or a backslash is printed as a double-quoted\n" +
			"string with Go escapes (\"a\\nb\"), so every line is exactly one key and a\n" +
			"line that starts with \" is always quoted. With -0 every key is printed raw,\n" +
			"followed by a NUL byte (for xargs -0); a key that itself holds a NUL byte\n" +
			"cannot be written that way and makes ls fail after listing the others.",
		Flags: []cli.Flag{
			tableFlag(),
			&cli.BoolFlag{Name: "null", Aliases: []string{"0"}, Usage: "end each key with a NUL byte instead of a newline, and print it raw"},
		},
		Action: runLs,
	}
}

func runLs(ctx *cli.Context) (err error) {
	if err := checkArgs(ctx, 1, 2); err != nil {
		return err
	}
	v, err := openVault(ctx, ctx.Args().Get(0), openRead)
	if err != nil {
		return err
	}
	defer closeVault(v, &err)

	raw := ctx.Bool("null")
	out := bufio.NewWriterSize(ctx.App.Writer, 64<<10)
	withNUL := 0
	for k, err := range v.Keys(ctx.Args().Get(1)) {
		if err != nil {
			out.Flush() // what was listed before the error is still true
			return err
		}
		switch {
		case !raw:
			out.WriteString(displayKey(k))
			out.WriteByte('\n')
		case strings.IndexByte(k, 0) >= 0:
			withNUL++
		default:
			out.WriteString(k)
			out.WriteByte(0)
		}
	}
	if err := out.Flush(); err != nil {
		return err
	}
	if withNUL > 0 {
		return fmt.Errorf("%d key(s) contain a NUL byte and were left out of the -0 listing; list without -0 to see them quoted", withNUL)
	}
	return nil
}

// displayKey returns k as it is, or double-quoted with Go escapes when it
// holds anything that would break one-key-per-line output or make a plain
// key look like a quoted one: control characters, invalid UTF-8, '"' or
// '\'. Printable Unicode stays readable.
func displayKey(k string) string {
	q := strconv.Quote(k)
	if q[1:len(q)-1] == k {
		return k
	}
	return q
}
