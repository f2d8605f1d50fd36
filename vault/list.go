package vault

import (
	"bytes"
	"database/sql"
	"errors"
	"iter"
	"strings"
)

// listBatch is how many entries one listing query reads. Each query is
// its own short read transaction, so a listing of any length neither
// holds memory nor blocks checkpoints.
const listBatch = 512

// Item is a key and its value, as Items yields them.
type Item struct {
	Key   string
	Value []byte
}

// Keys returns an iterator over the keys that start with prefix ("" for
// all), path keys first in path order (component by component), then
// binary keys in byte order. It reads a bounded batch per transaction,
// runs in constant memory and has no limit on the number of keys. Pending
// cache entries are merged in. An error ends the iteration as the last
// pair, with an empty key.
func (v *Vault) Keys(prefix string) iter.Seq2[string, error] {
	if v.kv != nil {
		return v.kvKeys(prefix)
	}
	return func(yield func(string, error) bool) {
		// The pending entries as of now decide for their keys, even if a
		// flush or a write changes them during the listing: a key that
		// exists throughout is listed exactly once.
		pending, deleted := v.cache.snapshotStates(prefix)
		if len(pending) == 0 {
			for k, err := range v.storedKeys(prefix) {
				if !yield(k, wrap("list", prefix, err)) || err != nil {
					return
				}
			}
			return
		}
		// Merge the stored keys with the pending ones, which win.
		emit := func(k string) bool { return deleted[k] || yield(k, nil) }
		for k, err := range v.storedKeys(prefix) {
			if err != nil {
				yield("", wrap("list", prefix, err))
				return
			}
			for len(pending) > 0 && compareKeys(pending[0], k) <= 0 {
				if !emit(pending[0]) {
					return
				}
				pending = pending[1:]
			}
			if _, ok := deleted[k]; ok {
				continue // pending: emitted (or deleted) from the snapshot
			}
			if !yield(k, nil) {
				return
			}
		}
		for _, k := range pending {
			if !emit(k) {
				return
			}
		}
	}
}

// Items returns an iterator over keys under prefix and their values, in
// the order of Keys. Each value is read whole; use GetTo for huge ones. A
// key deleted between listing and reading is skipped.
func (v *Vault) Items(prefix string) iter.Seq2[Item, error] {
	return func(yield func(Item, error) bool) {
		for k, err := range v.Keys(prefix) {
			if err != nil {
				yield(Item{}, err)
				return
			}
			val, err := v.Get(k)
			if errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalidArgument) {
				continue // deleted meanwhile, or a symlink
			}
			if !yield(Item{k, val}, err) || err != nil {
				return
			}
		}
	}
}

// Values returns an iterator over the values of the keys under prefix.
func (v *Vault) Values(prefix string) iter.Seq2[[]byte, error] {
	return func(yield func([]byte, error) bool) {
		for it, err := range v.Items(prefix) {
			if !yield(it.Value, err) || err != nil {
				return
			}
		}
	}
}

// listFrame is one directory being walked by storedKeys.
type listFrame struct {
	dir     int64
	path    string // key prefix of the directory's entries
	after   string // last name read
	started bool
	within  string // only names with this prefix (the top frame)
	batch   []listEntry
}

type listEntry struct {
	name string
	kind Kind
	ino  int64
}

// storedKeys walks the tree depth-first in name order, then the binary
// keys, reading listBatch rows per query.
func (v *Vault) storedKeys(prefix string) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		top, ok, err := v.listStart(prefix)
		if err != nil {
			yield("", err)
			return
		}
		if ok && !v.walkTree(top, yield) {
			return
		}
		v.walkBinary(prefix, yield)
	}
}

// listStart finds the directory where a prefix's tree keys live: "a/b"
// lists entries of "a" whose names start with "b".
func (v *Vault) listStart(prefix string) (*listFrame, bool, error) {
	dirPart, namePart := "", prefix
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		dirPart, namePart = prefix[:i], prefix[i+1:]
	}
	if dirPart == "" {
		if strings.HasPrefix(prefix, "/") {
			return nil, false, nil // no path key starts with "/"
		}
		return &listFrame{dir: RootIno, within: namePart}, true, nil
	}
	parts, ok := treeParts(dirPart)
	if !ok {
		return nil, false, nil
	}
	var dir Inode
	err := v.view("list", prefix, func(q *sql.Tx) error {
		var err error
		dir, err = v.resolve(q, keyPath{key: dirPart, parts: parts})
		return err
	})
	if errors.Is(err, ErrNotFound) || (err == nil && dir.Kind != KindDir) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return &listFrame{dir: dir.ID, path: dirPart + "/", within: namePart}, true, nil
}

// walkTree yields the non-directory keys below the top frame.
func (v *Vault) walkTree(top *listFrame, yield func(string, error) bool) bool {
	stack := []*listFrame{top}
	for len(stack) > 0 {
		f := stack[len(stack)-1]
		if len(f.batch) == 0 {
			if err := v.readBatch(f); err != nil {
				return yield("", err) && false
			}
			if len(f.batch) == 0 {
				stack = stack[:len(stack)-1]
				continue
			}
		}
		e := f.batch[0]
		f.batch = f.batch[1:]
		if f.within != "" && !strings.HasPrefix(e.name, f.within) {
			f.batch = nil
			stack = stack[:len(stack)-1] // past the names with the prefix
			continue
		}
		switch {
		case f.dir == RootIno && e.name == ReservedDir:
		case e.kind == KindDir:
			stack = append(stack, &listFrame{dir: e.ino, path: f.path + e.name + "/"})
		default:
			if !yield(f.path+e.name, nil) {
				return false
			}
		}
	}
	return true
}

// readBatch reads the next entries of a frame's directory.
func (v *Vault) readBatch(f *listFrame) error {
	q := `SELECT d.name, i.kind, d.child FROM {t}_dentries d JOIN {t}_inodes i ON i.id = d.child
		WHERE d.parent = ? AND d.name > ? ORDER BY d.name LIMIT ?`
	from := f.after
	if !f.started {
		q = strings.Replace(q, "d.name > ?", "d.name >= ?", 1)
		from = f.within
		f.started = true
	}
	rows, err := v.r.Query(v.sql(q), f.dir, from, listBatch)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var e listEntry
		if err := rows.Scan(&e.name, &e.kind, &e.ino); err != nil {
			return err
		}
		f.batch = append(f.batch, e)
		f.after = e.name
	}
	return rows.Err()
}

// walkBinary yields the binary keys that start with prefix.
func (v *Vault) walkBinary(prefix string, yield func(string, error) bool) {
	from := []byte(prefix)
	op := ">="
	for {
		rows, err := v.r.Query(v.sql(`SELECT key FROM {t}_binkeys WHERE key `+op+` ? ORDER BY key LIMIT ?`), from, listBatch)
		if err != nil {
			yield("", err)
			return
		}
		var keys [][]byte
		for rows.Next() {
			var k []byte
			if err := rows.Scan(&k); err != nil {
				rows.Close()
				yield("", err)
				return
			}
			keys = append(keys, k)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			yield("", err)
			return
		}
		for _, k := range keys {
			if !bytes.HasPrefix(k, []byte(prefix)) {
				return
			}
			if !yield(string(k), nil) {
				return
			}
		}
		if len(keys) < listBatch {
			return
		}
		from, op = keys[len(keys)-1], ">"
	}
}

// Len returns the number of keys, pending cache entries included.
func (v *Vault) Len() (int, error) {
	if v.kv != nil {
		return v.kvLen()
	}
	// A flush committing between the count and the adjustments for the
	// pending entries below would count its entries twice or not at all.
	v.cache.flushMu.Lock()
	defer v.cache.flushMu.Unlock()
	var n int
	err := v.view("len", "", func(q *sql.Tx) error {
		return q.QueryRow(v.sql(`SELECT count(*) FROM {t}_dentries d JOIN {t}_inodes i ON i.id = d.child
			WHERE i.kind != 2`)).Scan(&n)
	})
	if err != nil {
		return 0, err
	}
	for _, k := range v.cache.snapshot("") {
		p, ok := v.cache.lookup(k)
		if !ok {
			continue
		}
		kp, _ := parseKey(k)
		in, err := v.statStored(kp)
		stored := err == nil && in.Kind != KindDir
		if err != nil && !errors.Is(err, ErrNotFound) {
			return 0, wrap("len", "", err)
		}
		switch {
		case !p.deleted && !stored:
			n++
		case p.deleted && stored:
			n--
		}
	}
	return n, nil
}
