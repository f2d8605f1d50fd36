package main

import (
	"bufio"
	"fmt"
	"time"

	"github.com/kohakuvault/kvaultfs/vault"
	"github.com/urfave/cli/v2"
)

// statCommand is "kvaultfs stat DB KEY".
func statCommand() *cli.Command {
	return &cli.Command{
		Name:      "stat",
		Usage:     "show a key's metadata",
		ArgsUsage: "DB KEY",
		Description: "Prints the metadata of KEY in the vault DB, one \"name: value\" a line:\n" +
			"key, kind, size (bytes), mode (octal permission bits), uid, gid, nlink,\n" +
			"mtime and ctime (RFC 3339 with nanoseconds), inode, chunk_size (bytes),\n" +
			"generation (changes whenever the data does), target for a symlink and rdev\n" +
			"for a device.",
		Flags:  []cli.Flag{tableFlag()},
		Action: runStat,
	}
}

func runStat(ctx *cli.Context) (err error) {
	if err := checkArgs(ctx, 2, 2); err != nil {
		return err
	}
	v, err := openVault(ctx, ctx.Args().Get(0), openRead)
	if err != nil {
		return err
	}
	defer closeVault(v, &err)
	key := ctx.Args().Get(1)
	in, err := v.Stat(key)
	if err != nil {
		return err
	}
	out := bufio.NewWriter(ctx.App.Writer)
	writeStat(out, key, in)
	return out.Flush()
}

// writeStat prints in as "name: value" lines. The names are part of the
// CLI's interface: scripts match on them.
func writeStat(out *bufio.Writer, key string, in vault.Inode) {
	line := func(name string, value any) { fmt.Fprintf(out, "%s: %v\n", name, value) }
	line("key", displayKey(key))
	line("kind", in.Kind)
	line("size", in.Size)
	line("mode", fmt.Sprintf("%04o", in.Mode))
	line("uid", in.UID)
	line("gid", in.GID)
	line("nlink", in.Nlink)
	line("mtime", formatTime(in.Mtime))
	line("ctime", formatTime(in.Ctime))
	line("inode", in.ID)
	line("chunk_size", in.ChunkSize)
	line("generation", in.Generation)
	switch in.Kind {
	case vault.KindSymlink:
		line("target", displayKey(in.Target))
	case vault.KindCharDev, vault.KindBlockDev:
		line("rdev", in.Rdev)
	}
}

// formatTime writes nanoseconds since the epoch in RFC 3339, which sorts
// and parses everywhere and keeps the full precision.
func formatTime(ns int64) string {
	return time.Unix(0, ns).Format(time.RFC3339Nano)
}
