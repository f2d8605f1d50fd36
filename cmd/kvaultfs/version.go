package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/kohakuvault/kvaultfs/vault"
	"github.com/urfave/cli/v2"
)

// version is the release, set at build time with
// -ldflags "-X main.version=v1.2.3". Left at "dev", the module version
// that "go install ...@v1.2.3" records is used instead.
var version = "dev"

// versionCommand is "kvaultfs version".
func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version",
		Description: "Prints \"kvaultfs VERSION\" and, in parentheses, the vault format version\n" +
			"it writes, the Go version and the platform.",
		Action: func(ctx *cli.Context) error {
			if err := checkArgs(ctx, 0, 0); err != nil {
				return err
			}
			_, err := fmt.Fprintf(ctx.App.Writer, "kvaultfs %s (vault format %d, %s, %s/%s)\n",
				versionString(), vault.FormatVersion, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return err
		},
	}
}

// versionString returns the version set at build time, else the module
// version from the build info, else "dev".
func versionString() string {
	if version != "dev" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return version
}
