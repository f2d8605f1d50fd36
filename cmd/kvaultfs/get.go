package main

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/kohakuvault/kvaultfs/vault"
	"github.com/urfave/cli/v2"
)

// getCommand is "kvaultfs get DB KEY [FILE|-]".
func getCommand() *cli.Command {
	return &cli.Command{
		Name:      "get",
		Usage:     "write a key's value to a file (or stdout)",
		ArgsUsage: "DB KEY [FILE|-]",
		Description: "Writes the value of KEY in the vault DB to FILE, or to standard output when\n" +
			"FILE is omitted or -. The value is streamed, in constant memory. FILE is\n" +
			"replaced only when the whole value has been written and fsynced: a get that\n" +
			"fails leaves FILE as it was and no partial file behind. A FILE that is a\n" +
			"device or FIFO (such as /dev/null) is written to directly.",
		Flags:  []cli.Flag{tableFlag()},
		Action: runGet,
	}
}

func runGet(ctx *cli.Context) (err error) {
	if err := checkArgs(ctx, 2, 3); err != nil {
		return err
	}
	db, key, file := ctx.Args().Get(0), ctx.Args().Get(1), ctx.Args().Get(2)
	v, err := openVault(ctx, db, openRead)
	if err != nil {
		return err
	}
	defer closeVault(v, &err)
	if file == "" || file == "-" {
		_, err := v.GetTo(key, ctx.App.Writer)
		return err
	}
	return getToFile(v, key, file)
}

// getToFile writes key's value to path through a temporary file in the
// same directory, renamed over path once complete and fsynced, so that
// readers of path never see a partial value and a failure leaves no file.
func getToFile(v *vault.Vault, key, path string) error {
	target, err := followLinks(path)
	if err != nil {
		return err
	}
	st, err := os.Stat(target)
	switch {
	case err == nil && st.IsDir():
		return fmt.Errorf("%s: is a directory", path)
	case err == nil && !st.Mode().IsRegular():
		// A device or FIFO cannot be replaced by a rename, and a temporary
		// file beside /dev/null would not belong there.
		return getToSpecial(v, key, target)
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return err
	}

	tmp, err := createTemp(target)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the temporary name means nothing to the user
		}
		return fmt.Errorf("cannot create %s: %w", path, err)
	}
	// An interrupted get must not leave its temporary file behind either.
	stop := removeOnSignal(tmp.Name())
	defer stop()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()

	if _, err := v.GetTo(key, tmp); err != nil {
		return err
	}
	if st != nil {
		// Replacing a file keeps its permissions, as writing into it would.
		if err := tmp.Chmod(st.Mode().Perm()); err != nil {
			return err
		}
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), target); err != nil {
		return err
	}
	ok = true
	// The rename is durable only once the directory is synced; a failure
	// here is reported, though the file is already complete in place.
	return syncDir(filepath.Dir(target))
}

// followLinks returns the file that path names after following symlinks,
// even to a target that does not exist yet, so that get writes through a
// symlink as a shell redirection does instead of replacing the link.
func followLinks(path string) (string, error) {
	p := path
	for range 40 {
		fi, err := os.Lstat(p)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			return p, nil
		}
		dest, err := os.Readlink(p)
		if err != nil {
			return "", err
		}
		if !filepath.IsAbs(dest) {
			dest = filepath.Join(filepath.Dir(p), dest)
		}
		p = dest
	}
	return "", fmt.Errorf("%s: too many levels of symbolic links", path)
}

// createTemp makes a new file beside target. Unlike os.CreateTemp it uses
// mode 0666, so that after the umask the result has the permissions any
// newly created file would.
func createTemp(target string) (*os.File, error) {
	dir, base := filepath.Split(target)
	for range 100 {
		name := filepath.Join(dir, "."+base+".kvaultfs-"+strconv.FormatUint(rand.Uint64(), 36))
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
		if !errors.Is(err, fs.ErrExist) {
			return f, err
		}
	}
	return nil, fmt.Errorf("%s: cannot create a temporary file beside it", target)
}

// removeOnSignal removes name and exits if the process is interrupted
// before the returned stop function is called.
func removeOnSignal(name string) (stop func()) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			os.Remove(name)
			os.Exit(128 + int(s.(syscall.Signal)))
		case <-done:
		}
	}()
	return func() {
		signal.Stop(sigs)
		close(done)
	}
}

// getToSpecial writes the value straight into an existing non-regular file.
func getToSpecial(v *vault.Vault, key, path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = v.GetTo(key, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncDir fsyncs a directory, making a rename inside it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
