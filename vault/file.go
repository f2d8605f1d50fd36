package vault

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"sync"
	"sync/atomic"
)

// File is an open value: an io.Reader, io.ReaderAt, io.Writer,
// io.WriterAt and io.Seeker over a key's bytes, like *os.File. Reads
// fetch only the chunks they need. Writes go to dirty chunks in memory
// that every File of the same inode in this process sees at once; Flush,
// Sync and Close commit them. A File keeps reading the data it opened
// even if the key is deleted or replaced meanwhile, in any process.
// Its methods are safe for concurrent use.
type File struct {
	v        *Vault
	oi       *openInode
	name     string
	writable bool
	append   bool

	mu     sync.Mutex // guards off
	off    int64
	closed atomic.Bool
}

// Open opens key for reading.
func (v *Vault) Open(key string) (*File, error) { return v.OpenFile(key, os.O_RDONLY, 0) }

// OpenFile opens key with os.O_* flags: O_RDONLY, O_WRONLY or O_RDWR,
// plus O_CREATE (with perm for a new file), O_EXCL, O_TRUNC and O_APPEND.
func (v *Vault) OpenFile(key string, flag int, perm fs.FileMode) (*File, error) {
	if v.kv != nil {
		return nil, errKohakuFile("open")
	}
	kp, err := parseKey(key)
	if err != nil {
		return nil, wrap("open", key, err)
	}
	if _, pending := v.cache.lookup(key); pending {
		if _, err := v.FlushCache(); err != nil {
			return nil, wrap("open", key, err)
		}
	}
	var in Inode
	if flag&os.O_CREATE != 0 {
		if err := v.checkDirect(kp); err != nil { // the cached view must allow the new file
			return nil, wrap("open", key, err)
		}
		err = v.update("open", key, func(t *tx) error {
			old, err := v.resolve(t, kp)
			switch {
			case err == nil && flag&os.O_EXCL != 0:
				return ErrExists
			case err == nil:
				in = old
				return nil
			case !errors.Is(err, ErrNotFound):
				return err
			}
			in, err = t.newInode(KindFile, uint32(perm.Perm()), euid, egid, 0, "", 0)
			if err != nil {
				return err
			}
			return t.link(kp, &in)
		})
	} else {
		in, err = v.statStored(kp)
	}
	if err != nil {
		return nil, wrap("open", key, err)
	}
	if err := regularFile(in); err != nil {
		return nil, wrap("open", key, err)
	}
	f, err := v.openInode(in.ID, flag)
	if err != nil {
		return nil, wrap("open", key, err)
	}
	f.name = key
	return f, nil
}

// OpenInode opens an inode by number with os.O_* access flags (O_TRUNC
// and O_APPEND are honoured; creation is the caller's business). It is
// what the file system layer uses.
func (v *Vault) OpenInode(ino int64, flag int) (*File, error) {
	if v.kv != nil {
		return nil, errKohakuFile("open")
	}
	f, err := v.openInode(ino, flag)
	return f, wrap("open", fmt.Sprintf("inode %d", ino), err)
}

func (v *Vault) openInode(ino int64, flag int) (*File, error) {
	writable := flag&(os.O_WRONLY|os.O_RDWR) != 0
	if writable && v.readOnly {
		return nil, v.readOnlyErr()
	}
	oi, err := v.acquire(ino, writable)
	if err != nil {
		return nil, err
	}
	f := &File{v: v, oi: oi, name: fmt.Sprintf("inode %d", ino), writable: writable, append: flag&os.O_APPEND != 0}
	if writable {
		oi.writers.Add(1)
	}
	if writable && flag&os.O_TRUNC != 0 {
		if err := oi.truncate(v, 0); err != nil {
			v.releaseInode(oi)
			return nil, err
		}
	}
	return f, nil
}

// Name returns the key (or inode) the file was opened as.
func (f *File) Name() string { return f.name }

// Ino returns the file's inode number.
func (f *File) Ino() int64 { return f.oi.ino }

func (f *File) check(op string, write bool) error {
	if f.closed.Load() {
		return wrap(op, f.name, ErrClosed)
	}
	if write && !f.writable {
		return wrap(op, f.name, fmt.Errorf("%w: not open for writing", ErrPermission))
	}
	return nil
}

// ReadAt reads len(p) bytes from off; fewer only at the end of the file,
// with io.EOF.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	if err := f.check("read", false); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, wrap("read", f.name, fmt.Errorf("%w: negative offset", ErrInvalidArgument))
	}
	if off >= MaxFileSize {
		return 0, io.EOF // no file reaches it, and off+len(p) could overflow below
	}
	n, err := f.oi.readAt(f.v, p, off)
	if err == io.EOF {
		return n, io.EOF
	}
	return n, wrap("read", f.name, err)
}

// Read reads from the file's offset and advances it.
func (f *File) Read(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.ReadAt(p, f.off)
	f.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// WriteAt writes p at off, growing the file as needed; the gap before
// off, if any, reads as zeros.
func (f *File) WriteAt(p []byte, off int64) (int, error) {
	if err := f.check("write", true); err != nil {
		return 0, err
	}
	if err := CheckRange(off, int64(len(p))); err != nil {
		return 0, wrap("write", f.name, err)
	}
	if err := f.oi.writeAt(f.v, p, off); err != nil {
		return 0, wrap("write", f.name, err)
	}
	return len(p), nil
}

// Write writes at the file's offset and advances it; with O_APPEND it
// writes at the current end, atomically with respect to other writers.
func (f *File) Write(p []byte) (int, error) {
	if f.append {
		n, _, err := f.Append(p)
		return n, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.WriteAt(p, f.off)
	f.off += int64(n)
	return n, err
}

// Append writes p at the end of the file and returns where it went.
func (f *File) Append(p []byte) (int, int64, error) {
	if err := f.check("write", true); err != nil {
		return 0, 0, err
	}
	off, err := f.oi.appendData(f.v, p)
	if err != nil {
		return 0, 0, wrap("write", f.name, err)
	}
	f.mu.Lock()
	f.off = off + int64(len(p))
	f.mu.Unlock()
	return len(p), off, nil
}

// Seek sets the offset for the next Read or Write, as io.Seeker.
func (f *File) Seek(offset int64, whence int) (int64, error) {
	if err := f.check("seek", false); err != nil {
		return 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset = addOffset(f.off, offset)
	case io.SeekEnd:
		in, err := f.Stat()
		if err != nil {
			return 0, err
		}
		offset = addOffset(in.Size, offset)
	default:
		return 0, wrap("seek", f.name, fmt.Errorf("%w: whence %d", ErrInvalidArgument, whence))
	}
	if offset < 0 {
		return 0, wrap("seek", f.name, fmt.Errorf("%w: negative offset", ErrInvalidArgument))
	}
	if offset > MaxFileSize {
		// lseek(2) says EINVAL past the largest offset a file may have.
		return 0, wrap("seek", f.name, fmt.Errorf("%w: offset %d is past the largest file size, %d bytes", ErrInvalidArgument, offset, MaxFileSize))
	}
	f.off = offset
	return offset, nil
}

// addOffset returns base+delta, or -1 when the sum overflows (base is
// never negative, so only a positive delta can overflow).
func addOffset(base, delta int64) int64 {
	if delta > 0 && base > math.MaxInt64-delta {
		return -1
	}
	return base + delta
}

// Generation returns the inode's data generation as this process last
// saw it: when the file was opened, or when this process last committed
// to it. A mount compares it to decide whether cached pages are current.
func (f *File) Generation() int64 {
	f.oi.mu.RLock()
	defer f.oi.mu.RUnlock()
	return f.oi.gen
}

// Size returns the size as this process last saw it stored (when it
// opened, read, wrote or stat'ed the file), uncommitted writes included.
// Stat reads the size another process may have changed since.
func (f *File) Size() int64 {
	f.oi.mu.RLock()
	defer f.oi.mu.RUnlock()
	return f.oi.sizeLocked()
}

// Stat returns the file's metadata with uncommitted size and times.
func (f *File) Stat() (Inode, error) {
	if err := f.check("stat", false); err != nil {
		return Inode{}, err
	}
	return f.v.GetInode(f.oi.ino)
}

// Truncate changes the size, committing at once. Bytes past a shrunk end
// are gone: growing the file again exposes zeros.
func (f *File) Truncate(size int64) error {
	if err := f.check("truncate", true); err != nil {
		return err
	}
	if err := checkSize(size); err != nil {
		return wrap("truncate", f.name, err)
	}
	return wrap("truncate", f.name, f.oi.truncate(f.v, size))
}

// Grow makes the file at least size bytes long, committing at once, as
// fallocate(2) without FALLOC_FL_KEEP_SIZE does; the new bytes read as
// zeros. A file that is already longer, in this process's view or as
// another process stored it, keeps its size.
func (f *File) Grow(size int64) error {
	if err := f.check("allocate", true); err != nil {
		return err
	}
	if err := checkSize(size); err != nil {
		return wrap("allocate", f.name, err)
	}
	return wrap("allocate", f.name, f.oi.grow(f.v, size))
}

// Flush commits the file's dirty data (in one transaction) without
// waiting for it to reach the disk.
func (f *File) Flush() error {
	if err := f.check("flush", false); err != nil {
		return err
	}
	_, err := f.oi.commit(f.v, false)
	return wrap("flush", f.name, err)
}

// Sync commits the file's dirty data and makes it durable: it returns
// after the database's log has been fsynced.
func (f *File) Sync() error {
	if err := f.Flush(); err != nil {
		return err
	}
	return wrap("sync", f.name, f.v.Sync())
}

// Close commits the dirty data and releases the file. Its error reports
// a failed commit; the data then stays pending, and FlushCache or the
// vault's Close retries it.
func (f *File) Close() error {
	if f.closed.Swap(true) {
		return wrap("close", f.name, ErrClosed)
	}
	if f.writable {
		f.oi.writers.Add(-1)
	}
	return wrap("close", f.name, f.v.releaseInode(f.oi))
}

// SeekData returns the first offset at or after off that holds data
// (hole false) or is in a hole (hole true), as lseek's SEEK_DATA and
// SEEK_HOLE; the end of the file counts as a hole. ErrNotFound means
// there is no such offset (ENXIO).
func (f *File) SeekData(off int64, hole bool) (int64, error) {
	if err := f.check("seek", false); err != nil {
		return 0, err
	}
	res, err := f.oi.seekData(f.v, off, hole)
	return res, wrap("seek", f.name, err)
}
