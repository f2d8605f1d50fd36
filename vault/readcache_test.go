package vault

import "testing"

// TestReadCacheDropInode: dropping an inode's cached chunks removes them
// all and nothing else, and leaves no per-inode index behind.
func TestReadCacheDropInode(t *testing.T) {
	var c chunkCache
	c.init(1 << 20)
	for ino := int64(1); ino <= 3; ino++ {
		for idx := int64(0); idx < 10; idx++ {
			c.put(ino, idx, 7, []byte{byte(ino), byte(idx)})
		}
	}
	c.dropInode(2)
	buf := make([]byte, 2)
	for ino := int64(1); ino <= 3; ino++ {
		for idx := int64(0); idx < 10; idx++ {
			_, ok := c.copyOut(buf, ino, idx, 7, 0)
			if ok != (ino != 2) {
				t.Fatalf("chunk %d of inode %d cached = %v after dropping inode 2", idx, ino, ok)
			}
		}
	}
	if c.byIno[2] != nil || len(c.byIno) != 2 || len(c.items) != 20 || c.bytes != 40 {
		t.Errorf("after the drop: %d inodes indexed, %d items, %d bytes; want 2, 20, 40", len(c.byIno), len(c.items), c.bytes)
	}
	// Eviction keeps the index in step too.
	c.init(8)
	c.put(1, 0, 1, make([]byte, 2))
	c.put(2, 0, 1, make([]byte, 2))
	c.put(3, 0, 1, make([]byte, 2))
	c.put(4, 0, 1, make([]byte, 2))
	c.put(5, 0, 1, make([]byte, 2)) // evicts inode 1's chunk
	if _, ok := c.byIno[1]; ok || len(c.byIno) != 4 {
		t.Errorf("after an eviction %d inodes indexed (inode 1: %v), want 4 without inode 1", len(c.byIno), ok)
	}
}
