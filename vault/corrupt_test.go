package vault

import (
	"bytes"
	"database/sql"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Checksums: a chunk whose stored bytes were changed behind the vault's
// back is ErrCorrupt for its key, through every read path, and never
// returned as data; every other key still reads correctly; Verify names
// exactly the damaged key.

// corruptFixture is the content of the vault the corruption tests damage.
var corruptFixture = []struct {
	key    string
	size   int
	badIdx int64 // the chunk damaged when this key is the victim
}{
	{"a/one", 3*4096 + 10, 1},
	{"victim", 5 * 4096, 2},
	{"clips/2024/victim.mp4", 4*4096 + 1, 3},
	{"other", 100, 0},
	{"\x00bin\xffkey", 2*4096 + 5, 1},
	{"big", streamBatchBytes + 3*4096, streamBatchBytes/4096 + 1}, // damage in GetTo's second batch
}

// bigVictim is the long value, stored only when it is the victim.
const bigVictim = 5

// inFixture reports whether entry i is stored when victim is damaged.
func inFixture(i, victim int) bool { return i != bigVictim || victim == bigVictim }

func corruptValue(i int) []byte { return genBytes(uint64(100+i), corruptFixture[i].size) }

// damage changes chunk idx of the inode ino directly in SQLite.
type damage struct {
	name string
	do   func(t *testing.T, db *sql.DB, ino, idx int64)
}

var damages = []damage{
	{"flipped bit", func(t *testing.T, db *sql.DB, ino, idx int64) {
		var data []byte
		if err := db.QueryRow(`SELECT data FROM kvault_chunks WHERE inode = ? AND idx = ?`, ino, idx).Scan(&data); err != nil {
			t.Fatal(err)
		}
		data[len(data)/2] ^= 0x10
		rawExec(t, db, `UPDATE kvault_chunks SET data = ? WHERE inode = ? AND idx = ?`, data, ino, idx)
	}},
	{"truncated blob", func(t *testing.T, db *sql.DB, ino, idx int64) {
		rawExec(t, db, `UPDATE kvault_chunks SET data = substr(data, 1, 100) WHERE inode = ? AND idx = ?`, ino, idx)
	}},
	{"zeroed blob", func(t *testing.T, db *sql.DB, ino, idx int64) {
		rawExec(t, db, `UPDATE kvault_chunks SET data = zeroblob(len) WHERE inode = ? AND idx = ?`, ino, idx)
	}},
	{"wrong checksum", func(t *testing.T, db *sql.DB, ino, idx int64) {
		rawExec(t, db, `UPDATE kvault_chunks SET crc = (crc + 1) % 4294967296 WHERE inode = ? AND idx = ?`, ino, idx)
	}},
	{"wrong length", func(t *testing.T, db *sql.DB, ino, idx int64) {
		rawExec(t, db, `UPDATE kvault_chunks SET len = len - 1 WHERE inode = ? AND idx = ?`, ino, idx)
	}},
}

func rawExec(t *testing.T, db *sql.DB, query string, args ...any) {
	t.Helper()
	res, err := db.Exec(query, args...)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("%s changed %d rows, want 1", query, n)
	}
}

func TestCorruptChunkIsDetected(t *testing.T) {
	for _, victim := range []int{1, 2, 4, 5} { // a root key, a nested key, a binary key, a long value
		for i, dmg := range damages {
			if victim == bigVictim && i > 0 {
				break // the long value only checks where GetTo stops
			}
			key := corruptFixture[victim].key
			t.Run(strings.ReplaceAll(key, "\x00", "NUL")+"/"+dmg.name, func(t *testing.T) {
				testCorruptChunk(t, victim, dmg)
			})
		}
	}
}

func testCorruptChunk(t *testing.T, victim int, dmg damage) {
	path := filepath.Join(t.TempDir(), "v.db")
	v, err := Open(path, smallChunks())
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range corruptFixture {
		if inFixture(i, victim) {
			mustPut(t, v, c.key, corruptValue(i))
		}
	}
	var ino int64
	vkey := corruptFixture[victim].key
	if st, err := v.Stat(vkey); err != nil {
		t.Fatal(err)
	} else {
		ino = st.ID
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}

	badIdx := int(corruptFixture[victim].badIdx)
	db := rawDB(t, path, false)
	dmg.do(t, db, ino, int64(badIdx))
	db.Close()

	v, err = Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	want := corruptValue(victim)

	// Get: ErrCorrupt naming the operation and key, and no data.
	got, err := v.Get(vkey)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Get(victim) = %d bytes, %v; want ErrCorrupt", len(got), err)
	}
	if got != nil {
		t.Errorf("Get returned %d bytes with ErrCorrupt", len(got))
	}
	checkErrNames(t, err, "get", vkey)

	// GetTo: ErrCorrupt, and nothing of the damaged chunk (or after it)
	// reaches the writer.
	var buf bytes.Buffer
	n, err := v.GetTo(vkey, &buf)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("GetTo(victim) = %d, %v; want ErrCorrupt", n, err)
	}
	checkErrNames(t, err, "get", vkey)
	if buf.Len() > badIdx*4096 || !bytes.Equal(buf.Bytes(), want[:min(buf.Len(), len(want))]) || int64(buf.Len()) != n {
		t.Errorf("GetTo wrote %d bytes (reported %d) with ErrCorrupt; only correct bytes before chunk %d may be written", buf.Len(), n, badIdx)
	}

	// File.ReadAt: ErrCorrupt for any range that touches the chunk,
	// correct data for ranges that do not.
	f, err := v.Open(vkey)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, r := range [][2]int{{badIdx * 4096, 4096}, {badIdx*4096 + 100, 10}, {0, len(want)}, {badIdx*4096 - 5, 10}} {
		p := make([]byte, r[1])
		n, err := f.ReadAt(p, int64(r[0]))
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("ReadAt(%d, %d) = %d, %v; want ErrCorrupt", r[0], r[1], n, err)
		}
		if n != 0 {
			t.Errorf("ReadAt(%d, %d) returned %d bytes with ErrCorrupt", r[0], r[1], n)
		}
		checkErrNames(t, err, "read", vkey)
	}
	for _, r := range [][2]int{{0, badIdx * 4096}, {(badIdx + 1) * 4096, len(want) - (badIdx+1)*4096}, {len(want) - 1, 1}} {
		if r[1] <= 0 {
			continue
		}
		p := make([]byte, r[1])
		if n, err := f.ReadAt(p, int64(r[0])); (err != nil && err != io.EOF) || n != r[1] || !bytes.Equal(p, want[r[0]:r[0]+r[1]]) {
			t.Fatalf("ReadAt(%d, %d) of undamaged chunks = %d, %v, or wrong bytes", r[0], r[1], n, err)
		}
	}
	// Asking twice gives the same answer: nothing damaged was cached.
	if _, err := v.Get(vkey); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("second Get = %v", err)
	}

	// Every other key reads correctly through every path.
	for i, c := range corruptFixture {
		if i == victim || !inFixture(i, victim) {
			continue
		}
		if got := mustGet(t, v, c.key); !bytes.Equal(got, corruptValue(i)) {
			t.Fatalf("Get(%q) is wrong", c.key)
		}
		var buf bytes.Buffer
		if n, err := v.GetTo(c.key, &buf); err != nil || n != int64(c.size) || !bytes.Equal(buf.Bytes(), corruptValue(i)) {
			t.Fatalf("GetTo(%q) = %d, %v, or wrong bytes", c.key, n, err)
		}
		f, err := v.Open(c.key)
		if err != nil {
			t.Fatal(err)
		}
		p := make([]byte, c.size)
		if n, err := f.ReadAt(p, 0); err != nil || n != c.size || !bytes.Equal(p, corruptValue(i)) {
			t.Fatalf("ReadAt(%q) = %d, %v, or wrong bytes", c.key, n, err)
		}
		f.Close()
	}

	// Verify reports exactly the damaged key.
	var found []Damage
	checked, err := v.Verify(func(d Damage) { found = append(found, d) })
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	var chunks int64
	for i, c := range corruptFixture {
		if inFixture(i, victim) {
			chunks += int64((c.size + 4095) / 4096)
		}
	}
	if checked != chunks {
		t.Errorf("Verify checked %d chunks, want %d", checked, chunks)
	}
	if len(found) != 1 || !slices.Equal(found[0].Keys, []string{vkey}) || found[0].Ino != ino || !errors.Is(found[0].Err, ErrCorrupt) {
		t.Fatalf("Verify found %+v; want one damage of key %q (inode %d)", found, vkey, ino)
	}

	// Replacing the damaged value heals the key; the old inode goes with
	// its last open file.
	f.Close()
	mustPut(t, v, vkey, []byte("new"))
	if got := mustGet(t, v, vkey); string(got) != "new" {
		t.Fatalf("after replacing: %q", got)
	}
	found = nil
	if _, err := v.Verify(func(d Damage) { found = append(found, d) }); err != nil || len(found) != 0 {
		t.Fatalf("Verify after replacing the damaged value: %+v, %v", found, err)
	}
}

// checkErrNames checks that err is an *Error for op and key whose message
// names both.
func checkErrNames(t *testing.T, err error, op, key string) {
	t.Helper()
	var ve *Error
	if !errors.As(err, &ve) {
		t.Fatalf("%v is not a *vault.Error", err)
	}
	if ve.Op != op || ve.Key != key {
		t.Errorf("error %q has op %q and key %q; want %q and %q", err, ve.Op, ve.Key, op, key)
	}
	if msg := err.Error(); !strings.Contains(msg, op) || !strings.Contains(msg, strconvQuoteKey(key)) {
		t.Errorf("message %q does not name the operation %q and key %q", msg, op, key)
	}
}

// Checksums bound to the chunk's place: a chunk swapped or moved with
// its CRC, or replaced by one of another length with a CRC of its data,
// is ErrCorrupt and reported by Verify. Before format 2 the CRC covered
// the data alone, so Verify said ok and Get returned the wrong bytes.

// placeVault stores "a" and "b", three full chunks and a partial one
// each, closes the vault and returns its path and the inodes.
func placeVault(t *testing.T) (path string, a, b int64) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "v.db")
	v, err := Open(path, smallChunks())
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, v, "a", genBytes(21, 3*4096+500))
	mustPut(t, v, "b", genBytes(22, 3*4096+500))
	sa, _ := v.Stat("a")
	sb, _ := v.Stat("b")
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	return path, sa.ID, sb.ID
}

// oldCRC is the format 1 checksum: the data alone.
func oldCRC(data []byte) uint32 { return crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli)) }

// chunkRow reads one chunk's data and crc.
func chunkRow(t *testing.T, db *sql.DB, ino, idx int64) ([]byte, int64) {
	t.Helper()
	var data []byte
	var crc int64
	if err := db.QueryRow(`SELECT data, crc FROM kvault_chunks WHERE inode = ? AND idx = ?`, ino, idx).Scan(&data, &crc); err != nil {
		t.Fatal(err)
	}
	return data, crc
}

func setChunk(t *testing.T, db *sql.DB, ino, idx int64, data []byte, crc int64) {
	t.Helper()
	rawExec(t, db, `UPDATE kvault_chunks SET data = ?, len = ?, crc = ? WHERE inode = ? AND idx = ?`, data, len(data), crc, ino, idx)
}

// placeDamages move chunks around with their checksums.
var placeDamages = []struct {
	name   string
	victim string // the key that reads wrong bytes
	do     func(t *testing.T, db *sql.DB, a, b int64)
}{
	{"two chunks of a file swapped", "a", func(t *testing.T, db *sql.DB, a, _ int64) {
		d0, c0 := chunkRow(t, db, a, 0)
		d1, c1 := chunkRow(t, db, a, 1)
		setChunk(t, db, a, 0, d1, c1)
		setChunk(t, db, a, 1, d0, c0)
	}},
	{"a chunk copied from another file", "a", func(t *testing.T, db *sql.DB, a, b int64) {
		d, c := chunkRow(t, db, b, 1)
		setChunk(t, db, a, 1, d, c)
	}},
	{"a chunk replaced by a shorter one with the CRC of its data", "a", func(t *testing.T, db *sql.DB, a, _ int64) {
		d := genBytes(99, 100)
		setChunk(t, db, a, 1, d, int64(oldCRC(d)))
	}},
	{"the last chunk replaced by a longer one with the CRC of its data", "a", func(t *testing.T, db *sql.DB, a, _ int64) {
		d := genBytes(98, 4096)
		setChunk(t, db, a, 3, d, int64(oldCRC(d)))
	}},
	{"a chunk replaced by one longer than a chunk", "a", func(t *testing.T, db *sql.DB, a, _ int64) {
		d := genBytes(97, 8192)
		setChunk(t, db, a, 1, d, int64(oldCRC(d)))
	}},
}

func TestMovedChunkIsDetected(t *testing.T) {
	for _, pd := range placeDamages {
		t.Run(pd.name, func(t *testing.T) {
			path, a, b := placeVault(t)
			db := rawDB(t, path, false)
			pd.do(t, db, a, b)
			db.Close()
			v, err := Open(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			got, err := v.Get(pd.victim)
			if !errors.Is(err, ErrCorrupt) || got != nil {
				t.Errorf("Get = %d bytes, %v; want ErrCorrupt", len(got), err)
			}
			var buf bytes.Buffer
			if _, err := v.GetTo(pd.victim, &buf); !errors.Is(err, ErrCorrupt) {
				t.Errorf("GetTo: %v; want ErrCorrupt", err)
			}
			var found []Damage
			if _, err := v.Verify(func(d Damage) { found = append(found, d) }); err != nil {
				t.Fatal(err)
			}
			if len(found) != 1 || !slices.Equal(found[0].Keys, []string{pd.victim}) || !errors.Is(found[0].Err, ErrCorrupt) {
				t.Errorf("Verify found %+v; want one damage of %q", found, pd.victim)
			}
			// The file the chunk came from is untouched.
			if got := mustGet(t, v, "b"); !bytes.Equal(got, genBytes(22, 3*4096+500)) {
				t.Error("b reads back wrong")
			}
		})
	}
}

// TestMovedChunkFormat1 checks what a format-1 vault, whose checksums
// cover the data alone, still catches: a chunk of the wrong length.
func TestMovedChunkFormat1(t *testing.T) {
	data, err := os.ReadFile(fixturePath)
	if err != nil {
		t.Fatal(err)
	}
	for _, pd := range placeDamages[3:] { // longer than the chunk or the file allows
		t.Run(pd.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "format1.db")
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			db := rawDB(t, path, false)
			var ino int64
			if err := db.QueryRow(`SELECT child FROM kvault_dentries WHERE name = 'a.mp4'`).Scan(&ino); err != nil {
				t.Fatal(err)
			}
			pd.do(t, db, ino, 0)
			db.Close()
			v, err := Open(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			if got, err := v.Get("clips/2024/a.mp4"); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Get = %d bytes, %v; want ErrCorrupt", len(got), err)
			}
			var found []Damage
			if _, err := v.Verify(func(d Damage) { found = append(found, d) }); err != nil {
				t.Fatal(err)
			}
			if len(found) != 1 || found[0].Ino != ino {
				t.Errorf("Verify found %+v; want one damage of inode %d", found, ino)
			}
			// New writes to a format-1 vault stay readable by format 1.
			mustPut(t, v, "new", genBytes(5, 9000))
			if got := mustGet(t, v, "new"); !bytes.Equal(got, genBytes(5, 9000)) {
				t.Error("a new value in the format-1 vault reads back wrong")
			}
		})
	}
}
