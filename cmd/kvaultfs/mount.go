package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kohakuvault/kvaultfs/fs"
	"github.com/kohakuvault/kvaultfs/vault"
	"github.com/urfave/cli/v2"
)

// Defaults of the mount's write-back cache: open files' dirty chunks are
// held up to the cache size, and written out early (whole chunks first)
// when it fills, so a copy of any size needs no more memory than this.
const (
	defaultCacheSize      = 64 << 20
	defaultFlushThreshold = 32 << 20
)

// daemonOverhead is the daemon's Go heap beyond the write-back cache:
// the read cache, request buffers and the runtime. SQLite's page caches
// are C memory and come on top.
const daemonOverhead = 48 << 20

// daemonGCPercent lets the heap grow to five times what is live before a
// collection, within the soft limit of cache + daemonOverhead. A read
// allocates each chunk afresh in the SQLite driver, and memory that the
// runtime returns to the system between collections is slow to touch
// again on a VM. Measured on a 2-core VM, interleaved runs of a 1 GiB
// read with the database in the page cache: 877-1000 MB/s against
// 686-887 with the default 100 and a 96 MiB overhead; peak RssAnon while
// copying 2 GiB in and out: 144 MiB against 148.
const daemonGCPercent = 400

// readyFDEnv names the descriptor on which a --daemon child reports that
// the mount is ready ("ok") or why it failed.
const readyFDEnv = "KVAULTFS_READY_FD"

func mountCommand() *cli.Command {
	return &cli.Command{
		Name:      "mount",
		Usage:     "serve the vault as a file system until unmounted",
		ArgsUsage: "DB MOUNTPOINT",
		Description: "Every key is a file and \"/\" in keys makes directories; keys that are not\n" +
			"paths appear under MOUNTPOINT/.kvault/keys/. Runs in the foreground until\n" +
			"unmounted (kvaultfs unmount, fusermount3 -u) or interrupted (SIGINT, SIGTERM),\n" +
			"which commit everything and unmount. With --daemon it returns once the\n" +
			"mount is ready and keeps serving in the background.",
		Flags: append([]cli.Flag{
			&cli.BoolFlag{Name: "daemon", Usage: "return once the mount is ready and serve in the background"},
			&cli.BoolFlag{Name: "read-only", Usage: "mount read-only; the database file is never written"},
			&cli.BoolFlag{Name: "allow-other", Usage: "let other users in, with file modes enforced by the kernel (default_permissions)"},
			tableFlag(),
			initFlag(),
			chunkSizeFlag(),
			&cli.StringFlag{Name: "cache-size", Value: formatSize(defaultCacheSize), Usage: "memory for data not yet committed (dirty chunks of open files)"},
			&cli.StringFlag{Name: "flush-threshold", Value: formatSize(defaultFlushThreshold), Usage: "commit pending data once this much is waiting (at most --cache-size)"},
			&cli.DurationFlag{Name: "attr-timeout", Value: fs.DefaultAttrTimeout, Usage: "how long the kernel trusts names and attributes; other processes' changes show within it"},
			&cli.BoolFlag{Name: "debug", Usage: "log every FUSE request to stderr (or --log)"},
			&cli.StringFlag{Name: "log", Usage: "with --daemon, append messages to this file instead of discarding them"},
			&cli.StringFlag{Name: "cpu-profile", Hidden: true, Usage: "write a CPU profile of the daemon to this file (for development)"},
		}, tuningFlags()...),
		Action: runMount,
	}
}

func unmountCommand() *cli.Command {
	return &cli.Command{
		Name:      "unmount",
		Aliases:   []string{"umount"},
		Usage:     "commit everything and unmount a mounted vault",
		ArgsUsage: "MOUNTPOINT",
		Description: "Fails while a process uses the mount (a file open on it, or a working\n" +
			"directory inside it), naming the processes, unless --lazy: then the mount\n" +
			"is detached at once and the daemon exits when the last user is gone.\n" +
			"Waits for the daemon to finish writing the database.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "lazy", Usage: "detach now even if files are open"},
			&cli.DurationFlag{Name: "timeout", Value: time.Minute, Usage: "how long to wait for the daemon to finish"},
		},
		Action: runUnmount,
	}
}

// mountSettings are the parsed flags of a mount.
type mountSettings struct {
	db, mnt        string
	opts           *vault.Options
	cache, flushAt int64
	fs             fs.Options
}

func parseMount(ctx *cli.Context) (*mountSettings, error) {
	if err := checkArgs(ctx, 2, 2); err != nil {
		return nil, err
	}
	s := &mountSettings{db: ctx.Args().Get(0), mnt: ctx.Args().Get(1)}
	var err error
	if s.opts, err = vaultOptions(ctx, ctx.Bool("read-only")); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name string
		dst  *int64
	}{{"cache-size", &s.cache}, {"flush-threshold", &s.flushAt}} {
		v := ctx.String(f.name)
		n, err := parseSize(v)
		if err != nil {
			return nil, badFlag(ctx, f.name, v, err.Error())
		}
		if n <= 0 {
			return nil, badFlag(ctx, f.name, v, "must be positive")
		}
		*f.dst = n
	}
	if s.flushAt > s.cache {
		return nil, badFlag(ctx, "flush-threshold", ctx.String("flush-threshold"), "must not exceed --cache-size")
	}
	if t := ctx.Duration("attr-timeout"); t <= 0 || t > time.Hour {
		return nil, badFlag(ctx, "attr-timeout", t.String(), "must be between 0 and 1h")
	}
	s.fs = fs.Options{AttrTimeout: ctx.Duration("attr-timeout"), AllowOther: ctx.Bool("allow-other"), Debug: ctx.Bool("debug")}
	return s, nil
}

func runMount(ctx *cli.Context) error {
	s, err := parseMount(ctx)
	if err != nil {
		return err
	}
	if err := checkMountpoint(s.mnt); err != nil {
		return err
	}
	if err := checkOutside(s.db, s.mnt); err != nil {
		return err
	}
	if ctx.Bool("daemon") && os.Getenv(readyFDEnv) == "" {
		return spawnDaemon(ctx.String("log"))
	}
	if p := ctx.String("cpu-profile"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			return fmt.Errorf("--cpu-profile: %w", err)
		}
		defer f.Close()
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	ready := readyPipe()
	err = serve(s, ready)
	if ready != nil && err != nil {
		fmt.Fprintln(ready, oneLine(err))
		ready.Close()
	}
	return err
}

// serve mounts the vault and blocks until it is unmounted.
func serve(s *mountSettings, ready *os.File) (err error) {
	if s.opts.ReadOnly {
		if _, serr := os.Stat(s.db); serr != nil {
			return fmt.Errorf("%s: %w", s.db, errors.Unwrap(serr))
		}
	}
	v, err := vault.Open(s.db, s.opts)
	if err != nil {
		return err
	}
	served := false // then the vault is closed by finalClose
	defer func() {
		if !served {
			closeVault(v, &err)
		}
	}()
	// A soft limit near the cache budget keeps the daemon's footprint near
	// what the budget promises (the database pages it maps are not heap);
	// below it the collector may let garbage pile up (daemonGCPercent).
	debug.SetMemoryLimit(s.cache + daemonOverhead)
	debug.SetGCPercent(daemonGCPercent)
	if !v.ReadOnly() {
		if err := v.EnableCache(s.cache, s.flushAt); err != nil {
			return err
		}
	}
	abs, _ := filepath.Abs(s.db)
	s.fs.FsName = abs
	srv, err := fs.Mount(v.FS(), s.mnt, s.fs)
	if err != nil {
		return err
	}
	if ready != nil {
		fmt.Fprintln(ready, "ok")
		ready.Close()
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	// Signals stop serving while the mount is up, and after it give up
	// the final Close (finalClose): one goroutine reads them, so that a
	// signal goes to exactly one of the two.
	done := make(chan struct{})
	giveUp := make(chan os.Signal, 1)
	go func() {
		for sig := range sigs {
			select {
			case <-done:
				select {
				case giveUp <- sig:
				default:
				}
			default:
				stopServing(v, srv, s.mnt)
			}
		}
	}()
	srv.Wait()
	served = true
	close(done)
	return finalClose(v, giveUp)
}

// closeRetry is how often finalClose tries again, and closeWait how long
// it keeps trying: the writers of the data were told already (their
// close(2) or fsync(2) failed), and a shutdown must end.
const (
	closeRetry = 5 * time.Second
	closeWait  = 2 * time.Minute
)

// finalClose closes the vault once the mount is gone. If data that open
// files wrote could not be committed (a full disk, a lock held by
// another process), Close fails and keeps the data: the daemon then
// stays, says so, and tries again every closeRetry for up to closeWait,
// or until a signal on giveUp says to stop; giving up loses the data,
// and says that.
func finalClose(v *vault.Vault, giveUp <-chan os.Signal) error {
	deadline := time.After(closeWait)
	for said := false; ; said = true {
		err := v.Close()
		if err == nil {
			if said {
				fmt.Fprintln(os.Stderr, "kvaultfs: close: done, everything is committed")
			}
			return nil
		}
		retryable := errors.Is(err, vault.ErrNoSpace) || errors.Is(err, vault.ErrBusy)
		if !retryable {
			return fmt.Errorf("%w; writes not yet committed are lost", err)
		}
		if !said {
			fmt.Fprintf(os.Stderr, "kvaultfs: %v; the daemon keeps the data not yet committed and tries again every %v for up to %v: free space on the disk, or send SIGTERM to give up and lose it\n", err, closeRetry, closeWait)
		}
		select {
		case <-giveUp:
			return fmt.Errorf("%w; gave up on a signal: writes not yet committed are lost", err)
		case <-deadline:
			return fmt.Errorf("%w; gave up after %v: writes not yet committed are lost", err, closeWait)
		case <-time.After(closeRetry):
		}
	}
}

// stopServing commits everything pending and unmounts; if files are
// still open it detaches the mount (lazy unmount) and the server keeps
// answering them until the last one closes.
func stopServing(v *vault.Vault, srv *fs.Server, mnt string) {
	v.FlushCache()
	if err := srv.Unmount(); err == nil {
		return
	}
	if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil {
		exec.Command("fusermount3", "-u", "-z", mnt).Run()
	}
}

// checkMountpoint refuses a missing directory, a file, a stale mount and
// a directory that already has something mounted on it.
func checkMountpoint(mnt string) error {
	// statfs reaches the file system even where the kernel still has the
	// root's attributes cached, so it tells a dead daemon's mount apart.
	var sfs syscall.Statfs_t
	if err := syscall.Statfs(mnt, &sfs); errors.Is(err, syscall.ENOTCONN) {
		return fmt.Errorf("%s: a stale mount is in the way (its daemon died); run 'fusermount3 -u %s' or 'umount -l %s'", mnt, mnt, mnt)
	}
	st, err := os.Stat(mnt)
	switch {
	case errors.Is(err, syscall.ENOTCONN):
		return fmt.Errorf("%s: a stale mount is in the way (its daemon died); run 'fusermount3 -u %s' or 'umount -l %s'", mnt, mnt, mnt)
	case err != nil:
		return fmt.Errorf("mount point %w", err)
	case !st.IsDir():
		return fmt.Errorf("mount point %s is not a directory", mnt)
	}
	mounted, err := isMountPoint(mnt)
	if err != nil {
		return err
	}
	if mounted {
		return fmt.Errorf("mount point %s is busy: something is already mounted there", mnt)
	}
	return nil
}

// isMountPoint reports whether path is listed as a mount point.
func isMountPoint(path string) (bool, error) {
	abs, err := filepath.EvalSymlinks(path)
	if err != nil {
		return false, err
	}
	abs, _ = filepath.Abs(abs)
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && unescapeMount(fields[4]) == abs {
			return true, nil
		}
	}
	return false, sc.Err()
}

// unescapeMount decodes the octal escapes (\040 for a space) of
// /proc/self/mountinfo.
func unescapeMount(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// checkOutside refuses a database inside its own mount point: the daemon
// would have to serve its own reads of it, and deadlock.
func checkOutside(db, mnt string) error {
	dir, err := filepath.EvalSymlinks(filepath.Dir(db))
	if err != nil {
		return fmt.Errorf("database directory %w", err)
	}
	m, err := filepath.EvalSymlinks(mnt)
	if err != nil {
		return fmt.Errorf("mount point %w", err)
	}
	dir, _ = filepath.Abs(dir)
	m, _ = filepath.Abs(m)
	if dir == m || strings.HasPrefix(dir+"/", m+"/") {
		return fmt.Errorf("database %s is inside the mount point %s: the mount would hide it from its own daemon", db, mnt)
	}
	return nil
}

// spawnDaemon starts this command again in the background, detached from
// the terminal, and waits until it reports the mount ready or failed.
func spawnDaemon(logPath string) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	out := io.Discard
	var logFile *os.File
	if logPath != "" {
		if logFile, err = os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
			return fmt.Errorf("--log: %w", err)
		}
		defer logFile.Close()
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, os.Args[1:]...)
	cmd.Env = append(os.Environ(), readyFDEnv+"=3")
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if logFile != nil {
		cmd.Stdout, cmd.Stderr = logFile, logFile
	} else {
		cmd.Stdout, cmd.Stderr = out, out
	}
	if err := cmd.Start(); err != nil {
		w.Close()
		return err
	}
	w.Close()
	msg, _ := io.ReadAll(r)
	line := strings.TrimSpace(string(msg))
	if line == "ok" {
		cmd.Process.Release()
		return nil
	}
	cmd.Wait()
	if line == "" {
		return errors.New("the daemon exited before the mount was ready")
	}
	return errors.New(line)
}

// readyPipe returns the descriptor a --daemon parent waits on, if any.
func readyPipe() *os.File {
	if os.Getenv(readyFDEnv) == "" {
		return nil
	}
	os.Unsetenv(readyFDEnv)
	return os.NewFile(3, "ready")
}

// oneLine folds an error onto one line for the ready pipe.
func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", " ") }

func runUnmount(ctx *cli.Context) error {
	if err := checkArgs(ctx, 1, 1); err != nil {
		return err
	}
	mnt := ctx.Args().First()
	abs, err := filepath.Abs(mnt)
	if err != nil {
		return err
	}
	mounted, err := isMountPoint(abs)
	if err != nil && !errors.Is(err, syscall.ENOTCONN) {
		return err
	}
	if !mounted && err == nil {
		return fmt.Errorf("%s is not mounted", mnt)
	}
	daemon := findDaemon(abs)
	flags := 0
	if ctx.Bool("lazy") {
		flags = syscall.MNT_DETACH
	}
	if err := syscall.Unmount(abs, flags); err != nil {
		if errors.Is(err, syscall.EBUSY) {
			return fmt.Errorf("%s is busy: %s (stop them, or use --lazy)", mnt, describeUsers(mountUsers(abs)))
		}
		args := []string{"-u", abs}
		if flags != 0 {
			args = []string{"-u", "-z", abs}
		}
		if out, ferr := exec.Command("fusermount3", args...).CombinedOutput(); ferr != nil {
			return fmt.Errorf("unmount %s: %v; fusermount3: %s", mnt, err, strings.TrimSpace(string(out)))
		}
	}
	if daemon == 0 {
		return nil
	}
	// The daemon commits what is left and checkpoints the database when
	// its mount goes away; wait for that, so that the .db file is
	// complete when this returns.
	deadline := time.Now().Add(ctx.Duration("timeout"))
	for processAlive(daemon) {
		if time.Now().After(deadline) {
			return fmt.Errorf("unmounted %s, but its daemon (pid %d) is still finishing after %v", mnt, daemon, ctx.Duration("timeout"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// findDaemon returns the pid of the kvaultfs process serving mnt, found
// by its command line, or 0.
func findDaemon(mnt string) int {
	entries, _ := os.ReadDir("/proc")
	self, _ := os.Executable()
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil || pid == os.Getpid() {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if len(args) < 3 || filepath.Base(args[0]) != filepath.Base(self) || !containsMount(args) {
			continue
		}
		last := args[len(args)-1]
		cwd, _ := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if !filepath.IsAbs(last) {
			last = filepath.Join(cwd, last)
		}
		if filepath.Clean(last) == mnt {
			return pid
		}
	}
	return 0
}

func containsMount(args []string) bool {
	for _, a := range args[1:] {
		if a == "mount" {
			return true
		}
	}
	return false
}

// processAlive reports whether pid still runs (and is not a zombie).
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// maxUsersShown bounds the processes an unmount refusal names.
const maxUsersShown = 5

// mountUser is a process that keeps a mount busy, and how.
type mountUser struct {
	pid  int
	comm string
	how  string // "working directory", "root directory" or "open file NAME"
}

// mountUsers finds processes whose working directory, root or open files
// are inside mnt, from /proc. Reading the links does not enter the mount.
func mountUsers(mnt string) []mountUser {
	inside := func(p string) bool { return p == mnt || strings.HasPrefix(p, mnt+"/") }
	entries, _ := os.ReadDir("/proc")
	var users []mountUser
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		dir := filepath.Join("/proc", e.Name())
		comm, _ := os.ReadFile(filepath.Join(dir, "comm"))
		u := mountUser{pid: pid, comm: strings.TrimSpace(string(comm))}
		if p, err := os.Readlink(filepath.Join(dir, "cwd")); err == nil && inside(p) {
			u.how = "working directory"
		} else if p, err := os.Readlink(filepath.Join(dir, "root")); err == nil && inside(p) {
			u.how = "root directory"
		} else {
			fds, _ := os.ReadDir(filepath.Join(dir, "fd"))
			for _, fd := range fds {
				if p, err := os.Readlink(filepath.Join(dir, "fd", fd.Name())); err == nil && inside(p) {
					u.how = "open file " + strings.TrimPrefix(strings.TrimPrefix(p, mnt), "/")
					break
				}
			}
		}
		if u.how != "" {
			users = append(users, u)
		}
	}
	return users
}

// describeUsers says what keeps a mount busy, naming a few processes.
func describeUsers(users []mountUser) string {
	if len(users) == 0 {
		return "a process uses it (an open file, or a working directory inside it)"
	}
	parts := make([]string, 0, maxUsersShown)
	for i, u := range users {
		if i == maxUsersShown {
			parts = append(parts, fmt.Sprintf("and %d more", len(users)-i))
			break
		}
		parts = append(parts, fmt.Sprintf("pid %d (%s): %s", u.pid, u.comm, u.how))
	}
	return "in use by " + strings.Join(parts, "; ")
}
