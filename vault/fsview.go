package vault

import "github.com/kohakuvault/kvaultfs/store"

// FS returns the vault's file-system view, the store.FS that the mount is
// built on: the native vault's inodes, or a KohakuVault table's keys seen
// as files.
func (v *Vault) FS() store.FS {
	if v.kv != nil {
		return v.kv.FS()
	}
	return nativeFS{v}
}

// nativeFS is a native vault seen through store.FS: the inode-level
// methods are the vault's own, with the opened file as a store.File.
type nativeFS struct{ *Vault }

// OpenInode opens file ino (see Vault.OpenInode).
func (n nativeFS) OpenInode(ino int64, flag int) (store.File, error) {
	f, err := n.Vault.OpenInode(ino, flag)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// CreateFile makes and opens a file (see Vault.CreateFile).
func (n nativeFS) CreateFile(parent int64, name string, mode, uid, gid uint32, flag int) (store.File, Inode, error) {
	f, in, err := n.Vault.CreateFile(parent, name, mode, uid, gid, flag)
	if err != nil {
		return nil, in, err
	}
	return f, in, nil
}

var (
	_ store.FS   = nativeFS{}
	_ store.File = (*File)(nil)
)
