package kohaku

import (
	"fmt"

	"github.com/kohakuvault/kvaultfs/store"
)

// FS returns the table as a file system; the view is not built yet, so
// every operation is ErrNotSupported.
func (t *Table) FS() store.FS { return noFS{t} }

// noFS refuses every file-system operation.
type noFS struct{ t *Table }

func (n noFS) err() error {
	return fmt.Errorf("%w: mounting a KohakuVault table is not built yet", store.ErrNotSupported)
}

func (n noFS) GetInode(int64) (store.Inode, error)                 { return store.Inode{}, n.err() }
func (n noFS) Lookup(int64, string) (store.Inode, error)           { return store.Inode{}, n.err() }
func (n noFS) ReadDir(int64, int64, int) ([]store.DirEntry, error) { return nil, n.err() }
func (n noFS) OpenInode(int64, int) (store.File, error)            { return nil, n.err() }
func (n noFS) CreateFile(int64, string, uint32, uint32, uint32, int) (store.File, store.Inode, error) {
	return nil, store.Inode{}, n.err()
}
func (n noFS) Mkdir(int64, string, uint32, uint32, uint32) (store.Inode, error) {
	return store.Inode{}, n.err()
}
func (n noFS) Mknod(int64, string, store.Kind, uint32, uint32, uint32, uint32) (store.Inode, error) {
	return store.Inode{}, n.err()
}
func (n noFS) Symlink(int64, string, string, uint32, uint32) (store.Inode, error) {
	return store.Inode{}, n.err()
}
func (n noFS) Link(int64, int64, string) (store.Inode, error) { return store.Inode{}, n.err() }
func (n noFS) Unlink(int64, string) error                     { return n.err() }
func (n noFS) Rmdir(int64, string) error                      { return n.err() }
func (n noFS) RenameEntry(int64, string, int64, string, store.RenameFlags) error {
	return n.err()
}
func (n noFS) SetAttr(int64, store.SetAttr) (store.Inode, error)      { return store.Inode{}, n.err() }
func (n noFS) GetXattr(int64, string) ([]byte, error)                 { return nil, n.err() }
func (n noFS) SetXattr(int64, string, []byte, store.XattrFlags) error { return n.err() }
func (n noFS) ListXattr(int64) ([]string, error)                      { return nil, n.err() }
func (n noFS) RemoveXattr(int64, string) error                        { return n.err() }
func (n noFS) StatFS() (store.FSStats, error)                         { return store.FSStats{}, n.err() }
func (n noFS) Sync() error                                            { return n.t.Sync() }
func (n noFS) DataVersion() (int64, error)                            { return n.t.DataVersion() }
func (n noFS) Generations([]int64) (map[int64]int64, error)           { return nil, n.err() }
func (n noFS) ReadOnly() bool                                         { return n.t.ReadOnly() }
