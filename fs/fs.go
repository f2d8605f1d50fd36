// Package fs serves a vault as a FUSE file system: every key is a file,
// "/" in keys makes directories, reads and writes become chunk-range
// operations, and writes wait in the vault's write-back cache until
// fsync(2) or close(2). Keys that are not paths appear under
// /.kvault/keys/, named by the SHA-256 of the key.
//
// File locks (flock, fcntl) are the kernel's local locks: they work
// between processes using this mount, not across mounts or with library
// users of the same database.
package fs

import (
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/kohakuvault/kvaultfs/store"
)

// Options configure a mount.
type Options struct {
	// AttrTimeout is how long the kernel trusts attributes, entries and
	// negative lookups. Changes made by other processes show within it.
	AttrTimeout time.Duration
	// AllowOther lets other users access the mount; the kernel's
	// default_permissions then enforces file modes for everyone.
	AllowOther bool
	// Debug logs every FUSE request.
	Debug bool
	// FsName is shown as the mounted device (the database path).
	FsName string
}

// DefaultAttrTimeout is the attribute and entry timeout of a mount.
const DefaultAttrTimeout = time.Second

// maxWrite is the largest write (and read) request: one FUSE round trip
// per MiB instead of per 128 KiB.
const maxWrite = 1 << 20

// FS is the state shared by every node of one mounted vault.
type FS struct {
	v    store.FS
	opts Options

	// xattrWrites counts Setxattr calls, so that a listing that began
	// before one cannot mark its node as having no attributes.
	xattrWrites atomic.Int64

	// polledInodes counts the generations pollChanges has asked for,
	// which tests use to check that a round costs what is open now.
	polledInodes atomic.Int64

	mu sync.Mutex
	// watched are the files open in this mount, with their number of
	// handles: the only ones whose cached pages can be read without an
	// open, which compares generations itself (see node.open), so the
	// only ones polling must check. It follows what is open now, not
	// every file the kernel ever looked up.
	watched map[*node]int
	server  *fuse.Server
	root    *node
	stop    chan struct{}
	stopped chan struct{}
}

// Server is a running mount.
type Server struct {
	*fuse.Server
	fsys *FS
}

// Mount serves v at mountpoint and returns once the kernel has the mount.
// Unmount (or fusermount3 -u) ends it; Wait blocks until then.
func Mount(v store.FS, mountpoint string, opts Options) (*Server, error) {
	if opts.AttrTimeout <= 0 {
		opts.AttrTimeout = DefaultAttrTimeout
	}
	// The kernel asks for the root's attributes while the mount is set
	// up; if the store cannot answer, the mount would be left in place,
	// dead ("transport endpoint is not connected"). Ask first.
	if _, err := v.GetInode(store.RootIno); err != nil {
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	fsys := &FS{v: v, opts: opts, watched: map[*node]int{}, stop: make(chan struct{}), stopped: make(chan struct{})}
	root := &node{fsys: fsys}
	fsys.root = root
	timeout := opts.AttrTimeout
	mo := fuse.MountOptions{
		AllowOther:   opts.AllowOther,
		MaxWrite:     maxWrite,
		MaxReadAhead: maxWrite,
		FsName:       opts.FsName,
		Name:         "kvaultfs",
		Debug:        opts.Debug,
		DirectMount:  true, // as root; falls back to fusermount3
		// The kernel checks permissions from the modes we report, so
		// they hold for every user (and root keeps its privileges).
		Options: []string{"default_permissions"},
		// READDIRPLUS_AUTO: the kernel asks for attributes with the
		// listing (a lookup and a node per entry) only for the first
		// batch and when the lister stats the entries (ls -l), not for
		// every entry of a plain listing: without it, ls -f of a
		// directory of 1,000,000 keys made 1,000,000 nodes in memory.
		//
		// HANDLE_KILLPRIV_V2: clearing setuid and setgid on write,
		// truncate and chown is done here (see killPrivileges), which
		// lets the kernel skip a security.capability lookup before every
		// write.
		ExtraCapabilities: fuse.CAP_READDIRPLUS_AUTO | fuse.CAP_HANDLE_KILLPRIV_V2,
		// Replies come from memory; splicing them gains nothing and fails
		// for 1 MiB reads, whose reply exceeds a pipe.
		DisableSplice: true,
		// Every write reaches the daemon at once (no kernel writeback
		// cache): other handles see it immediately, mtime is set when
		// data is written, and O_APPEND writes land at the vault's end.
	}
	if v.ReadOnly() {
		mo.Options = append(mo.Options, "ro")
	}
	gopts := &gofs.Options{
		MountOptions:    mo,
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		NullPermissions: true, // a mode of 0 is a real mode here
		RootStableAttr:  &gofs.StableAttr{Ino: uint64(store.RootIno), Gen: 1},
	}
	if opts.Debug {
		gopts.Logger = log.Default()
	}
	server, err := gofs.Mount(mountpoint, root, gopts)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	fsys.server = server
	raiseReadAhead(mountpoint)
	go fsys.pollChanges()
	return &Server{Server: server, fsys: fsys}, nil
}

// Wait blocks until the file system is unmounted, then stops watching
// for changes.
func (s *Server) Wait() {
	s.Server.Wait()
	s.fsys.stopPolling()
}

// Unmount detaches the mount (it fails while files are busy) and stops
// watching for changes.
func (s *Server) Unmount() error {
	err := s.Server.Unmount()
	if err == nil {
		s.fsys.stopPolling()
	}
	return err
}

func (f *FS) stopPolling() {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.stop:
	default:
		close(f.stop)
	}
}

// watch records a new handle of a file.
func (f *FS) watch(n *node) {
	f.mu.Lock()
	f.watched[n]++
	f.mu.Unlock()
}

// unwatch records that a handle of a file was released; the file is no
// longer polled once its last handle is.
func (f *FS) unwatch(n *node) {
	f.mu.Lock()
	if f.watched[n] <= 1 {
		delete(f.watched, n)
	} else {
		f.watched[n]--
	}
	f.mu.Unlock()
}

// forget drops a node the kernel no longer knows (it has no handles
// left by then; this only makes sure).
func (f *FS) forget(n *node) {
	f.mu.Lock()
	delete(f.watched, n)
	f.mu.Unlock()
}

// invalidate drops the kernel's cached pages of a file. Notifications
// must not be sent from inside a request that the kernel may be holding
// locks for, so it is sent from its own goroutine.
func (f *FS) invalidate(n *node) {
	go n.NotifyContent(0, 0)
}

// pollChanges notices data changes made by other processes to files
// open in this mount, and drops their cached pages, within one attribute
// timeout: cheaply skipped while the database's data_version says
// nothing was committed, and otherwise one query per 500 open files.
// Files not open need no polling: their pages can only be read after an
// open, which keeps them only if the generation is unchanged.
func (f *FS) pollChanges() {
	defer close(f.stopped)
	tick := time.NewTicker(f.opts.AttrTimeout)
	defer tick.Stop()
	var last int64
	for {
		select {
		case <-f.stop:
			return
		case <-tick.C:
		}
		last = f.pollOnce(last)
	}
}

// pollOnce is one round of pollChanges: last is the data version the
// previous round saw, and the one this round saw is returned.
func (f *FS) pollOnce(last int64) int64 {
	dv, err := f.v.DataVersion()
	if err != nil || dv == last {
		return last
	}
	f.mu.Lock()
	nodes := make([]*node, 0, len(f.watched))
	for n := range f.watched {
		nodes = append(nodes, n)
	}
	f.mu.Unlock()
	ids := make([]int64, len(nodes))
	for i, n := range nodes {
		ids[i] = n.ino()
	}
	f.polledInodes.Add(int64(len(ids)))
	gens, err := f.v.Generations(ids)
	if err != nil {
		return dv
	}
	for _, n := range nodes {
		if g, ok := gens[n.ino()]; ok {
			n.noticeGeneration(&store.Inode{Kind: store.KindFile, Generation: g})
		}
	}
	return dv
}

// mountinfoEscapes undoes the octal escapes of /proc/self/mountinfo.
var mountinfoEscapes = strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)

// readAheadKB is the kernel read-ahead the mount asks for: with the
// default 128 KiB, a sequential reader costs a FUSE round trip (and a
// database read) per 128 KiB. Requests are at most 1 MiB (MaxWrite); a
// window of 4 of them keeps two or more in flight, so the daemon reads
// chunks on both cores while the kernel copies the last reply. Cold 1 GiB
// reads, interleaved runs on a 2-core VM: 4 MiB 629-724 MB/s against
// 408-729 MB/s with 1 MiB (a bare loopback, which only waits on the disk,
// is faster with 1 MiB, so the benchmark's loopback keeps that).
const readAheadKB = 4 * maxWrite >> 10

// raiseReadAhead sets the read-ahead of the mount's backing device, which
// the FUSE handshake cannot raise past 128 KiB. It needs root; without it
// the kernel's default stays. The device is found in mountinfo, not by
// touching the mount point, which the daemon must never do itself.
func raiseReadAhead(mountpoint string) {
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return
	}
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	dev := ""
	for _, line := range strings.Split(string(info), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && mountinfoEscapes.Replace(f[4]) == abs {
			dev = f[2] // the last mount on abs wins: ours
		}
	}
	if dev != "" {
		os.WriteFile("/sys/class/bdi/"+dev+"/read_ahead_kb", []byte(strconv.Itoa(readAheadKB)), 0)
	}
}
