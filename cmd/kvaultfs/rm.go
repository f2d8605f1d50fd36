package main

import "github.com/urfave/cli/v2"

// rmCommand is "kvaultfs rm DB KEY".
func rmCommand() *cli.Command {
	return &cli.Command{
		Name:        "rm",
		Usage:       "remove a key",
		ArgsUsage:   "DB KEY",
		Description: "Removes KEY from the vault DB. A missing key or DB is an error.",
		Flags:       []cli.Flag{tableFlag()},
		Action:      runRm,
	}
}

func runRm(ctx *cli.Context) (err error) {
	if err := checkArgs(ctx, 2, 2); err != nil {
		return err
	}
	v, err := openVault(ctx, ctx.Args().Get(0), openWrite)
	if err != nil {
		return err
	}
	defer closeCommitted(ctx, v, &err)
	if err := v.Delete(ctx.Args().Get(1)); err != nil {
		return err
	}
	return syncCommitted(v) // as for put: gone for good once rm returns
}
