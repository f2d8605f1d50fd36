package vault

import (
	"bytes"
	"container/list"
	"database/sql"
	"fmt"
	"hash/crc32"
	"sync"
)

// Chunk rows: a file's bytes [idx*chunkSize, (idx+1)*chunkSize) live in
// row (inode, idx) as len bytes with their CRC-32C. Rows never hold bytes
// at or past the file's size (truncate trims them), a row shorter than the
// chunk reads as zeros after its end, and a missing row is a hole.

// castagnoli is CRC-32C, hardware-accelerated by hash/crc32.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// chunkCRC is the checksum stored with chunk idx of inode ino. In format
// 2 it is the CRC-32C of a 24-byte header, the little-endian inode,
// index and length, followed by the data, so a chunk that is swapped
// with another, moved to another place or replaced by one of another
// length fails it even when its data and CRC travel together. Format 1
// checksummed the data alone; its vaults keep that checksum (see
// FormatVersion) and are checked for place and length separately.
//
// Every read computes it, so it allocates nothing: the header is fed to
// the table byte by byte (24 steps), because a header array handed to
// crc32.Update escapes to the heap (the hardware path is called through
// a function value); the data then takes the hardware path.
func chunkCRC(format, ino, idx int64, data []byte) uint32 {
	if format < 2 {
		return crc32.Checksum(data, castagnoli)
	}
	crc := ^uint32(0)
	for _, x := range [3]uint64{uint64(ino), uint64(idx), uint64(len(data))} {
		for range 8 {
			crc = castagnoli[byte(crc)^byte(x)] ^ (crc >> 8)
			x >>= 8
		}
	}
	return crc32.Update(^crc, castagnoli, data)
}

// checkChunk checks one stored chunk row of an inode whose chunk size is
// cs and whose size is size: the blob holds the length recorded (n), the
// length is within one chunk, the chunk ends within the file, and the
// checksum matches. It returns what is wrong, or "".
func checkChunk(format, ino, idx, n int64, crc uint32, cs, size int64, data []byte) string {
	switch {
	case int64(len(data)) != n:
		return fmt.Sprintf("chunk %d holds %d bytes, its row says %d", idx, len(data), n)
	case cs < 1 || cs > maxChunkSize:
		return fmt.Sprintf("chunk size %d out of range", cs)
	case n < 1 || n > cs:
		return fmt.Sprintf("chunk %d is %d bytes, outside (0, %d]", idx, n, cs)
	case idx < 0 || idx > MaxFileSize/cs || idx*cs+n > size:
		return fmt.Sprintf("chunk %d (%d bytes) lies past the end of the file (%d bytes)", idx, n, size)
	case chunkCRC(format, ino, idx, data) != crc:
		return fmt.Sprintf("chunk %d fails its checksum", idx)
	}
	return ""
}

// zeros is compared against to detect all-zero chunks, which are stored
// as holes.
var zeros [64 << 10]byte

func allZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeros))
		if !bytes.Equal(b[:n], zeros[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// chunkFitsSQL is checkChunk's test of length and place, in SQL, for the
// read path: one 0/1 column rather than the inode's chunk size and size,
// which database/sql would box (allocate) for every row read.
var chunkFitsSQL = fmt.Sprintf(`coalesce(i.chunk_size BETWEEN 1 AND %d AND c.len BETWEEN 1 AND i.chunk_size
	AND c.idx BETWEEN 0 AND %d / i.chunk_size AND c.idx * i.chunk_size + c.len <= i.size, 0)`, maxChunkSize, MaxFileSize)

// scanChunks reads the stored chunks first..last of inode in index order,
// verifies each and passes it to fn. The slice is only valid during the
// call. A damaged chunk is ErrCorrupt naming it.
//
// The inode row is joined in (SQLite reads it once, as the outer loop,
// by its key) so that, in the same snapshot, each chunk is checked to be
// no longer than the chunk size and to end within the file: that catches
// a chunk of the wrong length in vaults of format 1 too, whose checksums
// do not cover the chunk's place.
func (v *Vault) scanChunks(q querier, ino, first, last int64, fn func(idx int64, data []byte) error) error {
	rows, err := q.Query(v.sql(`SELECT c.idx, c.len, c.crc, `+chunkFitsSQL+`, c.data
		FROM {t}_inodes i JOIN {t}_chunks c ON c.inode = i.id
		WHERE i.id = ?1 AND c.idx BETWEEN ?2 AND ?3 ORDER BY c.idx`), ino, first, last)
	if err != nil {
		return err
	}
	return v.verifyRows(rows, ino, nil, fn)
}

// scanChunksOf is scanChunks for a reader that has read the inode's
// chunk size and size in the same transaction: the rows are checked
// against them here, and the query needs no join (a read of 4 KiB
// through the mount costs a fifth more with it).
func (v *Vault) scanChunksOf(q querier, ino, cs, size, first, last int64, fn func(idx int64, data []byte) error) error {
	rows, err := q.Query(v.sql(`SELECT idx, len, crc, 1, data FROM {t}_chunks
		WHERE inode = ?1 AND idx BETWEEN ?2 AND ?3 ORDER BY idx`), ino, first, last)
	if err != nil {
		return err
	}
	return v.verifyRows(rows, ino, &[2]int64{cs, size}, fn)
}

// verifyRows checks and passes on the rows of a chunk query; place, if
// set, holds the inode's chunk size and size to check each chunk against
// (otherwise the query's fourth column did).
func (v *Vault) verifyRows(rows *sql.Rows, ino int64, place *[2]int64, fn func(idx int64, data []byte) error) error {
	defer rows.Close()
	for rows.Next() {
		var idx, n, fits int64
		var crc uint32
		var data sql.RawBytes
		if err := rows.Scan(&idx, &n, &crc, &fits, &data); err != nil {
			return err
		}
		if place != nil {
			cs, size := place[0], place[1]
			if cs < 1 || cs > maxChunkSize || n < 1 || n > cs || idx < 0 || idx > MaxFileSize/cs || idx*cs+n > size {
				fits = 0
			}
		}
		switch {
		case int64(len(data)) != n:
			return fmt.Errorf("%w: inode %d: chunk %d holds %d bytes, its row says %d", ErrCorrupt, ino, idx, len(data), n)
		case fits == 0:
			return fmt.Errorf("%w: inode %d: chunk %d (%d bytes) is longer than a chunk or lies past the end of the file", ErrCorrupt, ino, idx, n)
		case chunkCRC(v.format, ino, idx, data) != crc:
			return fmt.Errorf("%w: inode %d: chunk %d fails its checksum", ErrCorrupt, ino, idx)
		}
		if err := fn(idx, data); err != nil {
			return err
		}
	}
	return rows.Err()
}

// putChunk stores chunk idx of inode, or deletes its row when the data is
// all zeros (a hole reads the same and costs nothing).
func (t *tx) putChunk(ino, idx int64, data []byte) error {
	if allZero(data) {
		_, err := t.Exec(t.v.sql(`DELETE FROM {t}_chunks WHERE inode = ? AND idx = ?`), ino, idx)
		return err
	}
	t.data += int64(len(data))
	_, err := t.Exec(t.v.sql(`INSERT INTO {t}_chunks (inode, idx, len, crc, data) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (inode, idx) DO UPDATE SET len = excluded.len, crc = excluded.crc, data = excluded.data`),
		ino, idx, len(data), chunkCRC(t.v.format, ino, idx, data), data)
	return err
}

// truncateChunks makes the stored data of inode end at size: rows past it
// are deleted and the row that size falls inside is cut short.
func (t *tx) truncateChunks(ino int64, chunkSize int, size int64) error {
	cs := int64(chunkSize)
	keep := (size + cs - 1) / cs // chunks [0, keep) may hold data
	if _, err := t.Exec(t.v.sql(`DELETE FROM {t}_chunks WHERE inode = ? AND idx >= ?`), ino, keep); err != nil {
		return err
	}
	if size%cs == 0 {
		return nil
	}
	idx, end := size/cs, int(size%cs)
	var cut []byte
	err := t.v.scanChunks(t, ino, idx, idx, func(_ int64, data []byte) error {
		if len(data) > end {
			cut = append([]byte(nil), data[:end]...)
		}
		return nil
	})
	if err != nil || cut == nil {
		return err
	}
	return t.putChunk(ino, idx, cut)
}

// readCacheBytes bounds the cache of recently read chunks. It turns the
// kernel's 128 KiB reads of one larger chunk into one fetch and one
// checksum, and holds a few chunks per concurrent reader.
const readCacheBytes = 16 << 20

// chunkCache holds recently read, verified chunks, keyed by inode, index
// and the inode's generation, so a rewrite by any process makes old
// entries unreachable.
type chunkCache struct {
	mu    sync.Mutex
	max   int
	bytes int
	items map[chunkKey]*list.Element
	// byIno lists the cached chunk indexes of each inode, so that a
	// commit drops its inode's chunks without scanning the whole cache
	// (it did, at every commit of every file).
	byIno map[int64]map[int64]struct{}
	lru   list.List // of *cachedChunk, most recent first
	spare [][]byte  // evicted buffers, reused so that reads touch no fresh memory
}

type chunkKey struct{ ino, idx int64 }

type cachedChunk struct {
	key  chunkKey
	gen  int64
	data []byte
}

func (c *chunkCache) init(maxBytes int) {
	c.max = maxBytes
	c.items = make(map[chunkKey]*list.Element)
	c.byIno = make(map[int64]map[int64]struct{})
}

// copyOut copies the cached chunk's bytes from off into dst, reporting
// whether the chunk was cached at generation gen, and how many bytes of
// the chunk are stored (the rest of the chunk reads as zeros).
func (c *chunkCache) copyOut(dst []byte, ino, idx, gen int64, off int) (stored int, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.items[chunkKey{ino, idx}]
	if e == nil {
		return 0, false
	}
	cc := e.Value.(*cachedChunk)
	if cc.gen != gen {
		return 0, false
	}
	c.lru.MoveToFront(e)
	if off < len(cc.data) {
		copy(dst, cc.data[off:])
	}
	return len(cc.data), true
}

// put caches a copy of data as chunk idx of ino at generation gen.
func (c *chunkCache) put(ino, idx, gen int64, data []byte) {
	if len(data) > c.max/4 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	k := chunkKey{ino, idx}
	if e := c.items[k]; e != nil {
		c.remove(e)
	}
	for c.bytes+len(data) > c.max && c.lru.Len() > 0 {
		c.remove(c.lru.Back())
	}
	buf := c.buffer(len(data))
	copy(buf, data)
	c.items[k] = c.lru.PushFront(&cachedChunk{key: k, gen: gen, data: buf})
	if c.byIno[ino] == nil {
		c.byIno[ino] = make(map[int64]struct{})
	}
	c.byIno[ino][idx] = struct{}{}
	c.bytes += len(buf)
}

// buffer returns a slice of length n, reusing an evicted one if it fits.
func (c *chunkCache) buffer(n int) []byte {
	for i, b := range c.spare {
		if cap(b) >= n {
			c.spare = append(c.spare[:i], c.spare[i+1:]...)
			return b[:n]
		}
	}
	return make([]byte, n)
}

func (c *chunkCache) remove(e *list.Element) {
	cc := c.lru.Remove(e).(*cachedChunk)
	delete(c.items, cc.key)
	if idxs := c.byIno[cc.key.ino]; idxs != nil {
		delete(idxs, cc.key.idx)
		if len(idxs) == 0 {
			delete(c.byIno, cc.key.ino)
		}
	}
	c.bytes -= len(cc.data)
	if len(c.spare) < 4 {
		c.spare = append(c.spare, cc.data)
	}
}

// dropInode forgets every cached chunk of ino, at a cost proportional
// to how many there are.
func (c *chunkCache) dropInode(ino int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for idx := range c.byIno[ino] {
		if e := c.items[chunkKey{ino, idx}]; e != nil {
			c.remove(e)
		}
	}
}
