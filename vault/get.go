package vault

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"io"
)

// Get returns the value stored under key, or ErrNotFound. A key that
// names a directory is ErrIsDir; a symlink or other special file is
// ErrInvalidArgument.
func (v *Vault) Get(key string) ([]byte, error) {
	if v.kv != nil {
		return v.kvGet(key)
	}
	kp, err := parseKey(key)
	if err != nil {
		return nil, wrap("get", key, err)
	}
	if v.cache.isDir(key) { // a directory in the cached view
		return nil, wrap("get", key, ErrIsDir)
	}
	if p, ok := v.cache.lookup(key); ok {
		if p.deleted {
			return nil, wrap("get", key, ErrNotFound)
		}
		return bytes.Clone(p.data), nil
	}
	// A value that fits one batch is read in one transaction straight
	// into the slice returned; a bigger one, or one open for writing
	// here, is streamed.
	var out []byte
	stream := false
	err = v.view("get", key, func(q *sql.Tx) error {
		in, err := v.resolve(q, kp)
		if err != nil {
			return err
		}
		if err := regularFile(in); err != nil {
			return err
		}
		if in.Size > streamBatchBytes || v.files.isOpen(in.ID) {
			stream = true
			return nil
		}
		out = make([]byte, in.Size)
		return readStored(v, q, in, out, 0)
	})
	if err != nil {
		return nil, err // never data together with an error
	}
	if !stream {
		return out, nil
	}
	var buf bytes.Buffer
	_, err = v.readValue("get", kp, &buf, func(size int64) { buf.Grow(int(size)) })
	if err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// GetTo writes the value stored under key to w and returns the number of
// bytes written. It reads a bounded batch of chunks per transaction, so a
// value of any size streams in constant memory without holding a read
// transaction open while w is slow. If the value is replaced or rewritten
// during the stream, GetTo stops with ErrChanged.
func (v *Vault) GetTo(key string, w io.Writer) (int64, error) {
	if v.kv != nil {
		return v.kvGetTo(key, w)
	}
	kp, err := parseKey(key)
	if err != nil {
		return 0, wrap("get", key, err)
	}
	if v.cache.isDir(key) { // a directory in the cached view
		return 0, wrap("get", key, ErrIsDir)
	}
	if p, ok := v.cache.lookup(key); ok {
		if p.deleted {
			return 0, wrap("get", key, ErrNotFound)
		}
		n, err := w.Write(p.data)
		return int64(n), wrap("get", key, err)
	}
	return v.readValue("get", kp, w, nil)
}

// readValue streams a stored value to w in batches.
func (v *Vault) readValue(op string, kp keyPath, w io.Writer, sizeKnown func(int64)) (int64, error) {
	bp := batchBufs.Get().(*[]byte)
	defer batchBufs.Put(bp)
	var in Inode
	var off int64
	var oi *openInode
	for first := true; first || off < in.Size; first = false {
		var n int
		err := v.view(op, kp.key, func(q *sql.Tx) error {
			if first {
				var err error
				if in, err = v.resolve(q, kp); err != nil {
					return err
				}
				if err := regularFile(in); err != nil {
					return err
				}
				if oi = v.files.lookup(in.ID); oi != nil {
					return nil // open here: read through its dirty chunks below
				}
			} else {
				var gen int64
				err := q.QueryRow(v.sql(`SELECT generation FROM {t}_inodes WHERE id = ?`), in.ID).Scan(&gen)
				if errors.Is(err, sql.ErrNoRows) || (err == nil && gen != in.Generation) {
					return fmt.Errorf("%w after %d bytes", ErrChanged, off)
				}
				if err != nil {
					return err
				}
			}
			buf := batchFor(bp, in.ChunkSize)
			n = int(min(int64(len(buf)), in.Size-off))
			return readStored(v, q, in, buf[:n], off)
		})
		if err != nil {
			return off, err
		}
		if oi != nil {
			return v.readOpen(op, kp.key, oi, in, w, sizeKnown)
		}
		if first && sizeKnown != nil {
			sizeKnown(in.Size)
		}
		if _, err := w.Write((*bp)[:n]); err != nil {
			return off, wrap(op, kp.key, err)
		}
		off += int64(n)
	}
	return off, nil
}

// readOpen streams a value that is open in this process, dirty data
// included.
// in is the inode as just read from the database.
func (v *Vault) readOpen(op, key string, oi *openInode, in Inode, w io.Writer, sizeKnown func(int64)) (int64, error) {
	oi.merge(&in)
	size := in.Size
	if sizeKnown != nil {
		sizeKnown(size)
	}
	bp := batchBufs.Get().(*[]byte)
	defer batchBufs.Put(bp)
	var off int64
	for off < size {
		n, err := oi.readAt(v, (*bp)[:min(int64(len(*bp)), size-off)], off)
		if n > 0 {
			if _, werr := w.Write((*bp)[:n]); werr != nil {
				return off, wrap(op, key, werr)
			}
			off += int64(n)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return off, wrap(op, key, err)
		}
	}
	return off, nil
}

// batchFor returns the part of the pooled buffer that holds a whole
// number of chunks, growing it for chunks bigger than a batch.
func batchFor(bp *[]byte, chunkSize int) []byte {
	if len(*bp) < chunkSize {
		*bp = make([]byte, chunkSize)
	}
	return (*bp)[:len(*bp)/chunkSize*chunkSize]
}

// readStored fills buf with the stored bytes of in from off (a multiple
// of the chunk size), holes as zeros.
func readStored(v *Vault, q querier, in Inode, buf []byte, off int64) error {
	if len(buf) == 0 {
		return nil
	}
	cs := int64(in.ChunkSize)
	clear(buf)
	return v.scanChunks(q, in.ID, off/cs, (off+int64(len(buf))-1)/cs, func(idx int64, data []byte) error {
		start := idx*cs - off
		copy(buf[start:min(start+cs, int64(len(buf)))], data)
		return nil
	})
}

// regularFile refuses inodes that have no value to read.
func regularFile(in Inode) error {
	switch in.Kind {
	case KindFile:
		return nil
	case KindDir:
		return ErrIsDir
	}
	return fmt.Errorf("%w: the key is a %s", ErrInvalidArgument, in.Kind)
}

// Exists reports whether key holds a value (a directory does not).
func (v *Vault) Exists(key string) (bool, error) {
	if v.kv != nil {
		return v.kvExists(key)
	}
	kp, err := parseKey(key)
	if err != nil {
		return false, wrap("exists", key, err)
	}
	if p, ok := v.cache.lookup(key); ok {
		return !p.deleted, nil
	}
	in, err := v.statStored(kp)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, wrap("exists", key, err)
	}
	return in.Kind != KindDir, nil
}

// Stat returns the metadata of key, which may name a file, directory or
// symlink. A value pending in the write-back cache has ID 0.
func (v *Vault) Stat(key string) (Inode, error) {
	if v.kv != nil {
		return v.kvStat(key)
	}
	kp, err := parseKey(key)
	if err != nil {
		return Inode{}, wrap("stat", key, err)
	}
	if p, ok := v.cache.lookup(key); ok {
		if p.deleted {
			return Inode{}, wrap("stat", key, ErrNotFound)
		}
		return Inode{Kind: KindFile, Mode: 0o644, UID: euid, GID: egid, Nlink: 1, Size: int64(len(p.data)),
			Atime: p.mtime, Mtime: p.mtime, Ctime: p.mtime, ChunkSize: v.opts.ChunkSize}, nil
	}
	in, err := v.statStored(kp)
	return in, wrap("stat", key, err)
}

// statStored resolves a key in the database, with this process's
// uncommitted size and times merged in.
func (v *Vault) statStored(kp keyPath) (Inode, error) {
	var in Inode
	err := v.view("stat", kp.key, func(q *sql.Tx) error {
		var err error
		in, err = v.resolve(q, kp)
		return err
	})
	if err == nil {
		if oi := v.files.lookup(in.ID); oi != nil {
			oi.merge(&in)
		}
	}
	return in, err
}
