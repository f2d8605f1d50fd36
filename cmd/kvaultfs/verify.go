package main

import (
	"bufio"
	"fmt"

	"github.com/kohakuvault/kvaultfs/vault"
	"github.com/urfave/cli/v2"
)

// verifyCommand is "kvaultfs verify DB".
func verifyCommand() *cli.Command {
	return &cli.Command{
		Name:      "verify",
		Usage:     "check the database, the tree and every chunk's checksum",
		ArgsUsage: "DB",
		Description: "Runs SQLite's integrity check on DB, checks that every table of a vault is\n" +
			"there, checks every inode (kind, size and chunk size in range, link count\n" +
			"matching its entries, no orphans: inodes no entry names and no running\n" +
			"process holds open), every entry (its parent a directory leading up to the\n" +
			"root, its inode present), and reads every chunk of every value, checking its\n" +
			"length (against its row, the chunk size and the file's size) and its CRC-32C,\n" +
			"which in format 2 vaults also covers the chunk's inode, index and length.\n" +
			"It reads in short transactions and never blocks writers. Each damaged key\n" +
			"is printed on its own line to standard output as KEY, a tab, and what is\n" +
			"wrong (keys quoted as ls quotes them); damage that belongs to no key is\n" +
			"printed as \"inode N\" or \"database\". A summary goes to standard error.\n\n" +
			"Exit status: 0 when the vault is clean, 1 when damage was found, 2 when the\n" +
			"check could not run (no such file, not a vault, I/O error).",
		Flags:  []cli.Flag{tableFlag()},
		Action: runVerify,
	}
}

func runVerify(ctx *cli.Context) (err error) {
	if err := checkArgs(ctx, 1, 1); err != nil {
		return err
	}
	v, err := openVault(ctx, ctx.Args().Get(0), openRead)
	if err != nil {
		return withCode(verifyCode(err), err)
	}
	defer closeVault(v, &err)

	out := bufio.NewWriter(ctx.App.Writer)
	problems := 0
	checked, err := v.Verify(func(d vault.Damage) {
		problems++
		for _, where := range damageSites(d) {
			fmt.Fprintf(out, "%s\t%v\n", where, d.Err)
		}
		out.Flush() // damage shows as it is found: a check of a big vault takes a while
	})
	if ferr := out.Flush(); err == nil {
		err = ferr
	}
	if err != nil {
		return withCode(verifyCode(err), fmt.Errorf("verify could not finish after %s (%s found so far): %w", count(checked, "chunk"), count(int64(problems), "problem"), err))
	}
	if problems > 0 {
		return fmt.Errorf("verify: %s found, %s checked", count(int64(problems), "problem"), count(checked, "chunk"))
	}
	fmt.Fprintf(ctx.App.ErrWriter, "kvaultfs: verify: ok, %s checked\n", count(checked, "chunk"))
	return nil
}

// damageSites names where d is: its keys, else its inode, else the
// database as a whole (damage SQLite's integrity check found).
func damageSites(d vault.Damage) []string {
	switch {
	case len(d.Keys) > 0:
		sites := make([]string, len(d.Keys))
		for i, k := range d.Keys {
			sites[i] = displayKey(k)
		}
		return sites
	case d.Ino != 0:
		return []string{fmt.Sprintf("inode %d", d.Ino)}
	}
	return []string{"database"}
}
