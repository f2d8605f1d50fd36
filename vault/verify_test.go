package vault

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// Verify checks the tree as well as the chunks: each damage below, made
// with SQL behind the vault's back, is reported as ErrCorrupt naming the
// inode; before, Verify checked only integrity_check and the CRCs and
// said nothing about any of them.

// treeVault stores a small tree and returns its path, closed, and the
// inodes of "d" (a directory), "d/f" and "g".
func treeVault(t *testing.T) (path string, d, f, g int64) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "v.db")
	v, err := Open(path, smallChunks())
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, v, "d/f", genBytes(1, 3*4096+10))
	mustPut(t, v, "d/e/x", []byte("x"))
	mustPut(t, v, "g", genBytes(2, 5000))
	mustPut(t, v, "\x00binary", []byte("bin"))
	ids := make([]int64, 3)
	for i, k := range []string{"d", "d/f", "g"} {
		st, err := v.Stat(k)
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = st.ID
	}
	var found []Damage
	if _, err := v.Verify(func(d Damage) { found = append(found, d) }); err != nil || len(found) != 0 {
		t.Fatalf("Verify of the intact tree: %+v, %v", found, err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	return path, ids[0], ids[1], ids[2]
}

var treeDamages = []struct {
	name string
	sql  string // with ?1 = d, ?2 = d/f, ?3 = g
	ino  int    // which of d, d/f, g (1..3) is reported, or 0 for another inode
	want string // in the message
}{
	{"entry to a missing inode", `INSERT INTO kvault_dentries (parent, name, child) VALUES (?1, 'ghost', 9999 + 0*?2*?3)`, 0, "does not exist"},
	{"file link count too high", `UPDATE kvault_inodes SET nlink = 2 + 0*?1*?3 WHERE id = ?2`, 2, "link count"},
	{"file link count zero", `UPDATE kvault_inodes SET nlink = 0 + 0*?1*?3 WHERE id = ?2`, 2, "link count"},
	{"directory link count", `UPDATE kvault_inodes SET nlink = 7 + 0*?2*?3 WHERE id = ?1`, 1, "link count"},
	{"file without its entry", `DELETE FROM kvault_dentries WHERE child = ?3 AND 0*?1*?2 = 0`, 3, "no entry names it"},
	{"linked file without an entry", `INSERT INTO kvault_inodes (kind, mode, uid, gid, nlink, size, atime, mtime, ctime, generation, chunk_size)
		VALUES (1, 420, 0, 0, 1, 0, 0, 0, 0, 1, 4096 + 0*?1*?2*?3)`, 0, "no entry names it"},
	{"chunk past the end of the file", `UPDATE kvault_inodes SET size = 4096 + 0*?1*?3 WHERE id = ?2`, 2, "past the end"},
	{"chunks of a missing inode", `INSERT INTO kvault_chunks (inode, idx, len, crc, data) SELECT 9999 + 0*?1*?2, idx, len, crc, data FROM kvault_chunks WHERE inode = ?3`, 0, "does not exist"},
	{"entry in a file", `INSERT INTO kvault_dentries (parent, name, child) VALUES (?3, 'inside', ?2 + 0*?1)`, 2, "not a directory"},
	{"directory cut from the root", `DELETE FROM kvault_dentries WHERE child = ?1 AND 0*?2*?3 = 0`, 1, ""},
	{"directory cycle", `UPDATE kvault_dentries SET parent = (SELECT child FROM kvault_dentries WHERE name = 'e') WHERE child = ?1 AND 0*?2*?3 = 0`, 1, "root"},
	{"binary key without its row", `DELETE FROM kvault_binkeys WHERE 0*?1*?2*?3 = 0`, 0, "binary key"},
	{"size out of range", `UPDATE kvault_inodes SET size = -5 + 0*?1*?3 WHERE id = ?2`, 2, "size"},
	{"chunk size zero", `UPDATE kvault_inodes SET chunk_size = 0 + 0*?1*?3 WHERE id = ?2`, 2, "chunk size"},
}

func TestVerifyTree(t *testing.T) {
	for _, td := range treeDamages {
		t.Run(td.name, func(t *testing.T) {
			path, d, f, g := treeVault(t)
			db := rawDB(t, path, false)
			query := td.sql
			if _, err := db.Exec(query, d, f, g); err != nil {
				t.Fatalf("%s: %v", query, err)
			}
			db.Close()
			o := DefaultOptions()
			o.ReadOnly = true // as kvaultfs verify opens it
			v, err := Open(path, o)
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			var found []Damage
			if _, err := v.Verify(func(d Damage) { found = append(found, d) }); err != nil {
				t.Fatalf("Verify could not finish: %v", err)
			}
			if len(found) == 0 {
				t.Fatal("Verify found nothing")
			}
			want := map[int]int64{1: d, 2: f, 3: g}[td.ino]
			ok := false
			for _, dm := range found {
				if !errors.Is(dm.Err, ErrCorrupt) {
					t.Errorf("damage %+v is not ErrCorrupt", dm)
				}
				if (dm.Ino == want || td.ino == 0) && strings.Contains(dm.Err.Error(), td.want) {
					ok = true
				}
			}
			if !ok {
				t.Errorf("Verify found %+v; want damage of inode %d mentioning %q", found, want, td.want)
			}
		})
	}
}

func TestVerifyMissingTable(t *testing.T) {
	path, _, _, _ := treeVault(t)
	db := rawDB(t, path, false)
	if _, err := db.Exec(`DROP TABLE kvault_xattrs`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	o := DefaultOptions()
	o.ReadOnly = true
	v, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	var found []Damage
	if _, err := v.Verify(func(d Damage) { found = append(found, d) }); err != nil {
		t.Fatalf("Verify could not finish: %v", err)
	}
	if len(found) != 1 || !errors.Is(found[0].Err, ErrCorrupt) || !strings.Contains(found[0].Err.Error(), "kvault_xattrs") {
		t.Fatalf("Verify found %+v; want the missing xattrs table", found)
	}
}

// TestVerifyOpenUnlinked: a file removed while open (here, by this
// process) is not an orphan while it is held, and is gone after.
func TestVerifyOpenUnlinked(t *testing.T) {
	v := openTest(t, smallChunks())
	mustPut(t, v, "f", genBytes(1, 10000))
	f, err := v.Open("f")
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Delete("f"); err != nil {
		t.Fatal(err)
	}
	var found []Damage
	if _, err := v.Verify(func(d Damage) { found = append(found, d) }); err != nil || len(found) != 0 {
		t.Fatalf("Verify with an unlinked file open: %+v, %v", found, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(func(d Damage) { found = append(found, d) }); err != nil || len(found) != 0 {
		t.Fatalf("Verify after the close: %+v, %v", found, err)
	}
}
