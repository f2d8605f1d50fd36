package vault

import (
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// verifyBatch is how many chunk rows Verify reads per transaction, and
// verifyTreeBatch how many inode or entry rows (no blobs).
const (
	verifyBatch     = 64
	verifyTreeBatch = 1024
)

// maxDepth bounds the walks up the tree (a path of 4096 bytes has at most
// 2048 components), so that a cycle of entries cannot make Verify loop.
const maxDepth = 4096

// requiredTables are the tables of a vault, without the prefix.
var requiredTables = []string{"meta", "inodes", "dentries", "chunks", "xattrs", "binkeys", "sessions", "open"}

// Damage is one problem Verify found.
type Damage struct {
	Keys []string // the keys whose data is damaged (several for hard links; none for an orphan)
	Ino  int64    // the damaged inode, or 0 for damage SQLite itself reports
	Err  error    // what is wrong
}

// Verify checks the whole file and calls report for each problem:
//   - SQLite's integrity_check, and that every table of a vault exists;
//   - every inode: a known kind, size and chunk size in range, a link
//     count that matches its entries (a directory: 2 plus one per
//     subdirectory). An unlinked inode (link count 0, no entry) is not
//     damage: it is a file removed while open, or left by a process
//     that died, and the next open of the vault (or a live process's
//     sweep) frees it once no live process holds it;
//   - every entry: its parent is a directory, its child exists, every
//     directory leads up to the root, and binary keys match their
//     entries;
//   - every chunk: its length (against its row, the chunk size and the
//     file's size) and its CRC-32C, which in format 2 also covers the
//     chunk's place.
//
// It reads in bounded transactions, so it never holds up writers or
// checkpoints; a problem seen in one is confirmed in a fresh one before
// it is reported, so that a change made meanwhile by another process is
// not reported as damage. It returns the number of chunks checked; a
// non-nil error means the check itself could not finish.
func (v *Vault) Verify(report func(Damage)) (int64, error) {
	if v.kv != nil {
		return v.kvVerify(report)
	}
	if _, err := v.FlushCache(); err != nil {
		return 0, err
	}
	if err := v.files.flushAll(v); err != nil {
		return 0, err
	}
	rows, err := v.r.Query("PRAGMA integrity_check")
	if err != nil {
		return 0, wrap("verify", "", err)
	}
	for rows.Next() {
		var msg string
		if err := rows.Scan(&msg); err != nil {
			rows.Close()
			return 0, wrap("verify", "", err)
		}
		if msg != "ok" {
			report(Damage{Err: fmt.Errorf("%w: integrity_check: %s", ErrCorrupt, msg)})
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, wrap("verify", "", err)
	}

	missing, err := v.missingTables()
	if err != nil {
		return 0, wrap("verify", "", err)
	}
	for _, tbl := range missing {
		report(Damage{Err: fmt.Errorf("%w: table %s is missing", ErrCorrupt, tbl)})
	}
	if len(missing) > 0 {
		return 0, nil // the other checks read every table
	}
	vr := verifier{v: v, report: report, reported: map[int64]bool{}}
	if err := vr.inodes(); err != nil {
		return 0, wrap("verify", "", err)
	}
	if err := vr.entries(); err != nil {
		return 0, wrap("verify", "", err)
	}
	checked, err := vr.chunks()
	return checked, wrap("verify", "", err)
}

// missingTables returns the vault tables the file lacks.
func (v *Vault) missingTables() ([]string, error) {
	var missing []string
	for _, tbl := range requiredTables {
		var n int
		err := v.r.QueryRow(`SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?`, v.opts.Table+"_"+tbl).Scan(&n)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			missing = append(missing, v.opts.Table+"_"+tbl)
		}
	}
	return missing, nil
}

// verifier is the state of one Verify.
type verifier struct {
	v        *Vault
	report   func(Damage)
	reported map[int64]bool // inodes whose chunks were reported, once each
}

// damage reports a problem of inode ino, naming its keys where the tree
// still leads to them.
func (vr *verifier) damage(ino int64, msg string) {
	keys, _ := vr.v.keysOf(ino) // a broken tree may name no key: the inode is reported
	vr.report(Damage{Keys: keys, Ino: ino, Err: fmt.Errorf("%w: %s", ErrCorrupt, msg)})
}

// inodeCheckSQL selects what checking one inode needs: its row, the
// number of entries naming it, and its subdirectories.
const inodeCheckSQL = `SELECT i.id, i.kind, i.nlink, i.size, i.chunk_size,
	(SELECT count(*) FROM {t}_dentries d WHERE d.child = i.id),
	(SELECT count(*) FROM {t}_dentries d JOIN {t}_inodes c ON c.id = d.child WHERE d.parent = i.id AND c.kind = 2)
	FROM {t}_inodes i`

// inodeProblem scans one row of inodeCheckSQL and says what is wrong
// with the inode, or "".
func (vr *verifier) inodeProblem(r rowScanner) (int64, string, error) {
	var id, kind, nlink, size, cs, links, subdirs int64
	if err := r.Scan(&id, &kind, &nlink, &size, &cs, &links, &subdirs); err != nil {
		return 0, "", err
	}
	if err := checkInode(id, kind, size, cs); err != nil {
		var bad *badInodeError
		if errors.As(err, &bad) {
			return id, bad.why, nil
		}
		return id, err.Error(), nil
	}
	switch {
	case id == RootIno && links != 0:
		return id, fmt.Sprintf("the root is named by %d entries", links), nil
	case Kind(kind) == KindDir && links > 1:
		return id, fmt.Sprintf("a directory named by %d entries", links), nil
	case links == 0 && id != RootIno && nlink != 0:
		return id, fmt.Sprintf("link count %d, but no entry names it", nlink), nil
	case Kind(kind) == KindDir && links+btoi(id == RootIno) > 0 && nlink != 2+subdirs:
		return id, fmt.Sprintf("link count %d, want %d (2 and %d subdirectories)", nlink, 2+subdirs, subdirs), nil
	case Kind(kind) != KindDir && nlink != links:
		return id, fmt.Sprintf("link count %d, but %d entries name it", nlink, links), nil
	}
	return id, "", nil
}

func btoi(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// inodes checks every inode row in batches, confirming each problem.
func (vr *verifier) inodes() error {
	v := vr.v
	var after int64
	for {
		var suspects []int64
		n := 0
		err := v.view("verify", "", func(q *sql.Tx) error {
			rows, err := q.Query(v.sql(inodeCheckSQL+` WHERE i.id > ? ORDER BY i.id LIMIT ?`), after, verifyTreeBatch)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				id, bad, err := vr.inodeProblem(rows)
				if err != nil {
					return err
				}
				after, n = id, n+1
				if bad != "" {
					suspects = append(suspects, id)
				}
			}
			return rows.Err()
		})
		if err != nil {
			return err
		}
		for _, id := range suspects {
			var bad string
			err := v.view("verify", "", func(q *sql.Tx) error {
				_, b, err := vr.inodeProblem(q.QueryRow(v.sql(inodeCheckSQL+` WHERE i.id = ?`), id))
				bad = b
				if errors.Is(err, sql.ErrNoRows) {
					return nil // freed meanwhile
				}
				return err
			})
			if err != nil {
				return err
			}
			if bad != "" {
				vr.damage(id, bad)
			}
		}
		if n < verifyTreeBatch {
			return nil
		}
	}
}

// entryCheckSQL selects what checking one entry needs: the kinds of its
// parent and child (NULL if missing), and for an entry of the keys
// directory whether its binary key is recorded.
const entryCheckSQL = `SELECT d.id, d.parent, d.name, d.child,
	(SELECT kind FROM {t}_inodes WHERE id = d.parent),
	(SELECT kind FROM {t}_inodes WHERE id = d.child),
	d.parent != 3 OR EXISTS (SELECT 1 FROM {t}_binkeys b WHERE b.name = d.name)
	FROM {t}_dentries d`

// entryRow is one row of entryCheckSQL.
type entryRow struct {
	id, parent, child int64
	name              string
	pkind, ckind      sql.NullInt64
	keyed             bool
}

func scanEntry(r rowScanner) (entryRow, error) {
	var e entryRow
	err := r.Scan(&e.id, &e.parent, &e.name, &e.child, &e.pkind, &e.ckind, &e.keyed)
	return e, err
}

// entryProblem says what is wrong with an entry, or "". Directories are
// checked to lead up to the root, with reach remembering those that do.
func (vr *verifier) entryProblem(q querier, e entryRow, reach map[int64]bool) (string, error) {
	where := fmt.Sprintf("entry %q in directory %d", e.name, e.parent)
	switch {
	case !e.ckind.Valid:
		return fmt.Sprintf("%s names inode %d, which does not exist", where, e.child), nil
	case !e.pkind.Valid:
		return fmt.Sprintf("%s: the directory does not exist", where), nil
	case Kind(e.pkind.Int64) != KindDir:
		return fmt.Sprintf("%s: inode %d is a %s, not a directory", where, e.parent, Kind(e.pkind.Int64)), nil
	case !e.keyed:
		return fmt.Sprintf("%s: the binary key of the entry is not recorded", where), nil
	}
	ok, err := vr.v.leadsToRoot(q, e.parent, reach)
	if err != nil || ok {
		return "", err
	}
	return fmt.Sprintf("%s: the directory does not lead up to the root", where), nil
}

// leadsToRoot reports whether directory dir is reachable from the root,
// walking up its entries; reach caches directories known to be (a
// directory has one entry, so the cache is exact while the tree holds
// still; a suspect is confirmed with an empty cache).
func (v *Vault) leadsToRoot(q querier, dir int64, reach map[int64]bool) (bool, error) {
	var path []int64
	for depth := 0; depth < maxDepth; depth++ {
		if dir == RootIno || reach[dir] {
			for _, d := range path {
				reach[d] = true
			}
			return true, nil
		}
		path = append(path, dir)
		err := q.QueryRow(v.sql(`SELECT parent FROM {t}_dentries WHERE child = ? LIMIT 1`), dir).Scan(&dir)
		if errors.Is(err, sql.ErrNoRows) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
	}
	return false, nil // a cycle, or deeper than any path
}

// entries checks every directory entry, and that every binary key has
// its entry.
func (vr *verifier) entries() error {
	v := vr.v
	reach := map[int64]bool{}
	var after int64
	for {
		var suspects []entryRow
		n := 0
		err := v.view("verify", "", func(q *sql.Tx) error {
			rows, err := q.Query(v.sql(entryCheckSQL+` WHERE d.id > ? ORDER BY d.id LIMIT ?`), after, verifyTreeBatch)
			if err != nil {
				return err
			}
			// The walks up the tree query too: read the batch first.
			var batch []entryRow
			for rows.Next() {
				e, err := scanEntry(rows)
				if err != nil {
					rows.Close()
					return err
				}
				batch = append(batch, e)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			for _, e := range batch {
				bad, err := vr.entryProblem(q, e, reach)
				if err != nil {
					return err
				}
				after, n = e.id, n+1
				if bad != "" {
					suspects = append(suspects, e)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, s := range suspects {
			var bad string
			err := v.view("verify", "", func(q *sql.Tx) error {
				e, err := scanEntry(q.QueryRow(v.sql(entryCheckSQL+` WHERE d.id = ?`), s.id))
				if errors.Is(err, sql.ErrNoRows) {
					return nil // removed meanwhile
				}
				if err != nil {
					return err
				}
				bad, err = vr.entryProblem(q, e, map[int64]bool{})
				return err
			})
			if err != nil {
				return err
			}
			if bad != "" {
				vr.damage(s.child, bad)
			}
		}
		if n < verifyTreeBatch {
			break
		}
	}
	// A binary key without its entry (the other direction was checked
	// with each entry).
	var orphanKeys []string
	err := v.view("verify", "", func(q *sql.Tx) error {
		rows, err := q.Query(v.sql(`SELECT name FROM {t}_binkeys b
			WHERE NOT EXISTS (SELECT 1 FROM {t}_dentries d WHERE d.parent = 3 AND d.name = b.name) LIMIT 100`))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var name string
			if err := rows.Scan(&name); err != nil {
				return err
			}
			orphanKeys = append(orphanKeys, name)
		}
		return rows.Err()
	})
	for _, name := range orphanKeys {
		vr.report(Damage{Err: fmt.Errorf("%w: binary key %s has no entry", ErrCorrupt, name)})
	}
	return err
}

// chunks checks every chunk row, in batches of bounded size, and reports
// each damaged inode once.
func (vr *verifier) chunks() (int64, error) {
	v := vr.v
	var checked, after int64
	for {
		type bad struct {
			ino int64
			msg string
		}
		var found []bad
		n := 0
		err := v.view("verify", "", func(q *sql.Tx) error {
			rows, err := q.Query(v.sql(`SELECT c.rowid, c.inode, c.idx, c.len, c.crc, i.kind, i.chunk_size, i.size, i.nlink,
				EXISTS (SELECT 1 FROM {t}_open o WHERE o.inode = c.inode), c.data
				FROM {t}_chunks c LEFT JOIN {t}_inodes i ON i.id = c.inode
				WHERE c.rowid > ? ORDER BY c.rowid LIMIT ?`), after, verifyBatch)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var ino, idx, ln int64
				var crc uint32
				var kind, cs, size, nlink sql.NullInt64
				var open bool
				var data sql.RawBytes
				if err := rows.Scan(&after, &ino, &idx, &ln, &crc, &kind, &cs, &size, &nlink, &open, &data); err != nil {
					return err
				}
				n++
				var msg string
				switch {
				case !kind.Valid && open:
					// A free in progress (session.go): the inode row
					// goes first, its chunks in batches after.
				case !kind.Valid:
					msg = fmt.Sprintf("chunk %d belongs to inode %d, which does not exist", idx, ino)
				case Kind(kind.Int64) != KindFile:
					msg = fmt.Sprintf("chunk %d belongs to a %s", idx, Kind(kind.Int64))
				default:
					fileSize := size.Int64
					if nlink.Int64 == 0 && open {
						// A streamed put in progress writes its chunks
						// before the size: only the rest is checked.
						fileSize = MaxFileSize
					}
					msg = checkChunk(v.format, ino, idx, ln, crc, cs.Int64, fileSize, data)
				}
				if msg != "" {
					found = append(found, bad{ino, msg})
				}
			}
			return rows.Err()
		})
		if err != nil {
			return checked, err
		}
		checked += int64(n)
		for _, b := range found {
			if vr.reported[b.ino] {
				continue
			}
			vr.reported[b.ino] = true
			vr.damage(b.ino, b.msg)
		}
		if n < verifyBatch {
			return checked, nil
		}
	}
}

// keysOf returns the keys that name inode ino.
func (v *Vault) keysOf(ino int64) ([]string, error) {
	var keys []string
	err := v.view("verify", "", func(q *sql.Tx) error {
		rows, err := q.Query(v.sql(`SELECT parent, name FROM {t}_dentries WHERE child = ?`), ino)
		if err != nil {
			return err
		}
		type link struct {
			parent int64
			name   string
		}
		var links []link
		for rows.Next() {
			var l link
			if err := rows.Scan(&l.parent, &l.name); err != nil {
				rows.Close()
				return err
			}
			links = append(links, l)
		}
		rows.Close()
		for _, l := range links {
			k, err := v.keyOfEntry(q, l.parent, l.name)
			if err != nil {
				return err
			}
			keys = append(keys, k)
		}
		return nil
	})
	return keys, err
}

// keyOfEntry builds the key of entry name in dir by walking up the tree.
// A tree that does not lead to the root (damage Verify reports) is an
// error, not a loop.
func (v *Vault) keyOfEntry(q querier, dir int64, name string) (string, error) {
	if dir == keysIno {
		var key []byte
		err := q.QueryRow(v.sql(`SELECT key FROM {t}_binkeys WHERE name = ?`), name).Scan(&key)
		if errors.Is(err, sql.ErrNoRows) {
			return ReservedDir + "/keys/" + name, nil
		}
		return string(key), err
	}
	parts := []string{name}
	for dir != RootIno {
		if len(parts) > maxDepth {
			return "", fmt.Errorf("%w: the entries above %q do not lead to the root", ErrCorrupt, name)
		}
		var parent int64
		var n string
		err := q.QueryRow(v.sql(`SELECT parent, name FROM {t}_dentries WHERE child = ? LIMIT 1`), dir).Scan(&parent, &n)
		if err != nil {
			return "", err
		}
		parts = append(parts, n)
		dir = parent
	}
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return strings.Join(parts, "/"), nil
}
