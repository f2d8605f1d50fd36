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

func checksum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

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

// scanChunks reads the stored chunks first..last of inode in index order,
// verifies each against its checksum and passes it to fn. The slice is
// only valid during the call. A damaged chunk is ErrCorrupt naming it.
func (v *Vault) scanChunks(q querier, ino, first, last int64, fn func(idx int64, data []byte) error) error {
	rows, err := q.Query(v.sql(`SELECT idx, len, crc, data FROM {t}_chunks
		WHERE inode = ? AND idx BETWEEN ? AND ? ORDER BY idx`), ino, first, last)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var idx, n int64
		var crc uint32
		var data sql.RawBytes
		if err := rows.Scan(&idx, &n, &crc, &data); err != nil {
			return err
		}
		if int64(len(data)) != n || checksum(data) != crc {
			return fmt.Errorf("%w: chunk %d of inode %d fails its checksum", ErrCorrupt, idx, ino)
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
		ino, idx, len(data), checksum(data), data)
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
