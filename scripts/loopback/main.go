// Command loopback mounts a directory through a bare go-fuse loopback file
// system. scripts/bench-mount.sh uses it as the ceiling for a go-fuse
// daemon on the machine it runs on: the same library, kernel protocol and
// mount settings as kvaultfs (DirectMount, 1 MiB MaxWrite, a 1 MiB
// read-ahead, default_permissions, READDIRPLUS_AUTO, 1 s entry, attribute
// and negative timeouts, no kernel writeback cache), with every request
// answered by the matching system call on ORIGDIR.
//
// FUSE passthrough is switched off (CAP_PASSTHROUGH is never offered to
// the kernel), so reads and writes travel through the daemon as they do
// for kvaultfs, instead of being handed to the backing file by the kernel.
//
// Usage:
//
//	loopback [-debug] [-readahead-kb N] ORIGDIR MOUNTPOINT
//
// It serves until the mount point is unmounted (umount, fusermount3 -u) or
// it receives SIGINT or SIGTERM, which unmount it.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// timeout matches kvaultfs's default entry and attribute timeout
// (fs.DefaultAttrTimeout).
const timeout = time.Second

// maxWrite matches kvaultfs's largest read and write request.
const maxWrite = 1 << 20

func main() {
	debug := flag.Bool("debug", false, "log every FUSE request to stderr")
	readAhead := flag.Int("readahead-kb", maxWrite>>10, "kernel read-ahead of the mount in KiB (0: the kernel's default, 128)")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: %s [-debug] [-readahead-kb N] ORIGDIR MOUNTPOINT\n", filepath.Base(os.Args[0]))
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 2 {
		flag.Usage()
		os.Exit(2)
	}
	orig, err := filepath.Abs(flag.Arg(0))
	if err != nil {
		log.Fatal(err)
	}
	root, err := fs.NewLoopbackRoot(orig)
	if err != nil {
		log.Fatalf("loopback root %s: %v", orig, err)
	}
	t := timeout
	opts := &fs.Options{
		MountOptions: fuse.MountOptions{
			MaxWrite:     maxWrite,
			MaxReadAhead: maxWrite,
			FsName:       orig,
			Name:         "loopback",
			Debug:        *debug,
			DirectMount:  true,
			Options:      []string{"default_permissions"},
			// Never negotiate passthrough: the kernel then refuses to
			// register backing files and every read and write is served
			// by this process.
			DisabledCapabilities: fuse.CAP_PASSTHROUGH,
			// As kvaultfs: attributes with a listing only when the lister
			// stats the entries.
			ExtraCapabilities: fuse.CAP_READDIRPLUS_AUTO,
		},
		EntryTimeout:    &t,
		AttrTimeout:     &t,
		NegativeTimeout: &t,
	}
	server, err := fs.Mount(flag.Arg(1), root, opts)
	if err != nil {
		log.Fatalf("mount %s: %v", flag.Arg(1), err)
	}
	if *readAhead > 0 {
		if err := setReadAhead(flag.Arg(1), *readAhead); err != nil {
			log.Printf("read-ahead stays at the kernel's default: %v", err)
		}
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		for range sigs {
			if err := server.Unmount(); err != nil {
				log.Printf("unmount: %v", err)
			}
		}
	}()
	server.Wait()
}

// setReadAhead sets the read-ahead of the mount's backing device, which
// the FUSE handshake cannot raise past 128 KiB (needs root). The device
// is found in /proc/self/mountinfo: the last mount on the mount point.
func setReadAhead(mountpoint string, kb int) error {
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return err
	}
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	unescape := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	dev := ""
	for _, line := range strings.Split(string(info), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && unescape.Replace(f[4]) == abs {
			dev = f[2]
		}
	}
	if dev == "" {
		return fmt.Errorf("%s not found in /proc/self/mountinfo", abs)
	}
	return os.WriteFile("/sys/class/bdi/"+dev+"/read_ahead_kb", []byte(strconv.Itoa(kb)), 0)
}
