package vault

import (
	"errors"
	"fmt"
)

// Rename moves the value or directory at oldKey to newKey in one short
// transaction, whatever its size: a directory moves with everything below
// it by changing one row. A value at newKey is replaced; a directory can
// only replace an empty directory. Pending cache entries are flushed
// first so that the rename sees them.
func (v *Vault) Rename(oldKey, newKey string) error {
	if v.kv != nil {
		return v.kvRename(oldKey, newKey)
	}
	src, err := parseKey(oldKey)
	if err != nil {
		return wrap("rename", oldKey, err)
	}
	dst, err := parseKey(newKey)
	if err != nil {
		return wrap("rename", newKey, err)
	}
	if v.CacheEnabled() {
		if _, err := v.FlushCache(); err != nil {
			return wrap("rename", oldKey, err)
		}
	}
	return v.update("rename", oldKey, func(t *tx) error {
		sp, sname, err := t.parentFor(src, false)
		if errors.Is(err, ErrNotDir) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		from, err := v.lookupLinked(t, sp, sname)
		if err != nil {
			return err
		}
		if dst.binary && from.Kind == KindDir {
			return fmt.Errorf("%w: a directory needs a path key, and %q is not one", ErrInvalidArgument, newKey)
		}
		dp, dname, err := t.parentFor(dst, true)
		if err != nil {
			return err
		}
		ref := entryRef{parent: dp, name: dname}
		if dst.binary {
			ref.binKey = dst.key
		}
		return t.rename(entryRef{parent: sp, name: sname}, ref, 0)
	})
}
