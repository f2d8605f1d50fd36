package vault

import (
	"bytes"
	"fmt"
	"io"
	"iter"
	"os"
	"slices"
	"strings"

	"github.com/kohakuvault/kvaultfs/kohaku"
	"github.com/kohakuvault/kvaultfs/store"
)

// A vault opened on a KohakuVault file serves the dict API from the
// file's KohakuVault table (package kohaku) in KohakuVault's own format,
// so that KohakuVault and kvaultfs can use the file at the same time. The
// methods of Vault check v.kv first and come here; what a KohakuVault
// value cannot be (a file written at offsets, a symlink, an inode) is
// ErrNotSupported.

// chooseStore decides what Open serves from the file at v.path, before
// anything is written to it: a KohakuVault table (returned), the native
// vault (nil, nil), or a refusal. The rules, in order:
//   - a KohakuVault table named by Options.Table is served;
//   - a native vault of that prefix (DefaultTable when none is named) is
//     served, unless no table was named and the file also holds
//     KohakuVault tables: then neither is chosen by surprise;
//   - the file's only KohakuVault table is served; several are refused
//     with their names, and so is a named table that does not exist;
//   - a native vault is created only if none of its table names is taken
//     by another program's table, and, if the file holds tables of another
//     program, only with Options.Init;
//   - a missing, empty or table-less file becomes a native vault.
func (v *Vault) chooseStore() (*kohaku.TableInfo, error) {
	sv, err := kohaku.SurveyFile(v.path)
	if err != nil {
		return nil, err
	}
	table := v.opts.Table
	if v.tableChosen {
		for _, kv := range sv.KV {
			if kv.Name == table {
				return &kv, nil
			}
		}
	}
	if hasNative(sv, table) {
		if !v.tableChosen && len(sv.KV) > 0 {
			return nil, fmt.Errorf("%w: the file holds both a kvaultfs vault (%s) and KohakuVault tables (%s): choose one with --table (Options.Table)",
				ErrInvalidArgument, table, listNames(kvNames(sv.KV)))
		}
		return nil, nil
	}
	if len(sv.KV) > 0 {
		if v.tableChosen {
			return nil, fmt.Errorf("%w: the file has no table %q; it holds KohakuVault tables %s: choose one with --table (Options.Table)",
				ErrInvalidArgument, table, listNames(kvNames(sv.KV)))
		}
		kv, err := sv.Choose("")
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidArgument, err)
		}
		return &kv, nil
	}
	if taken := nativeNamesTaken(sv, table); len(taken) > 0 {
		return nil, fmt.Errorf("%w: not a vault: the file has tables of another program named like a kvaultfs vault's (%s), so no vault %s can be added to it; choose another prefix with --table (Options.Table)",
			ErrInvalidArgument, listNames(taken), table)
	}
	if other := foreignTables(sv); len(other) > 0 && !v.opts.Init {
		what := "to add a kvaultfs vault beside them, open it with --init (Options.Init)"
		if v.opts.ReadOnly {
			what = "it holds no vault to read"
		}
		return nil, fmt.Errorf("%w: the file holds tables of another program: %s; it is neither a kvaultfs vault (no tables %s_meta and %s_inodes) nor a KohakuVault file; %s",
			ErrInvalidArgument, listNames(other), table, table, what)
	}
	return nil, nil
}

// hasNative reports whether sv holds a native vault of prefix: its meta
// and inodes tables (created together, in one transaction).
func hasNative(sv kohaku.Survey, prefix string) bool {
	return slices.Contains(sv.Tables, prefix+"_meta") && slices.Contains(sv.Tables, prefix+"_inodes")
}

// nativeNamesTaken returns the tables of sv that a new native vault of
// prefix would have to create but that exist already, belonging to
// another program (a VectorKVault's shadow table {t}_chunks, say):
// CREATE TABLE IF NOT EXISTS would quietly take them for the vault's own.
func nativeNamesTaken(sv kohaku.Survey, prefix string) []string {
	var taken []string
	for _, suffix := range nativeTables {
		if slices.Contains(sv.Tables, prefix+suffix) {
			taken = append(taken, prefix+suffix)
		}
	}
	return taken
}

// nativeTables are the suffixes of a native vault's tables (schema.go).
var nativeTables = []string{"_meta", "_inodes", "_dentries", "_chunks", "_xattrs", "_binkeys", "_sessions", "_open"}

// foreignTables returns the tables of sv that belong to no vault: neither
// to a native vault of any prefix (see hasNative) nor KohakuVault tables.
// A file that holds only vaults may get another native vault under a new
// prefix without Init.
func foreignTables(sv kohaku.Survey) []string {
	ours := make(map[string]bool)
	for _, kv := range sv.KV {
		ours[kv.Name] = true
	}
	for _, name := range sv.Tables {
		if prefix, ok := strings.CutSuffix(name, "_meta"); ok && prefix != "" && hasNative(sv, prefix) {
			for _, suffix := range nativeTables {
				ours[prefix+suffix] = true
			}
		}
	}
	var other []string
	for _, name := range sv.Tables {
		if !ours[name] {
			other = append(other, name)
		}
	}
	return other
}

// kvNames returns the names of tables.
func kvNames(tables []kohaku.TableInfo) []string {
	names := make([]string, len(tables))
	for i, t := range tables {
		names[i] = t.Name
	}
	return names
}

// listNames joins names for a one-line message, at most ten of them.
func listNames(names []string) string {
	const most = 10
	if len(names) <= most {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:most], ", "), len(names)-most)
}

// openKohaku opens the KohakuVault table that chooseStore picked.
func (v *Vault) openKohaku(info *kohaku.TableInfo) error {
	retries := v.opts.Retries
	if retries == 0 {
		retries = -1 // kohaku's zero means its default
	}
	t, err := kohaku.Open(v.path, kohaku.Options{Table: info.Name, ReadOnly: v.opts.ReadOnly, BusyTimeout: v.opts.BusyTimeout,
		Retries: retries, BackoffBase: v.opts.BackoffBase})
	if err != nil {
		return err
	}
	v.kv = t
	v.readOnly = t.ReadOnly()
	if v.readOnly {
		v.roReason = "read-only"
	}
	return nil
}

// Kohaku reports the KohakuVault table the vault serves, or "" and false
// for a native vault.
func (v *Vault) Kohaku() (table string, format string, ok bool) {
	if v.kv == nil {
		return "", "", false
	}
	return v.kv.Name(), v.kv.Format().String(), true
}

// errKohakuFile is what the native-only operations return on a
// KohakuVault file.
func errKohakuFile(op string) error {
	return wrap(op, "", fmt.Errorf("%w: a KohakuVault table holds whole values, not files; use Get, GetTo, Put and PutReader, or mount it", store.ErrNotSupported))
}

// kvPut stores value under key, in the write-back cache if it is on.
func (v *Vault) kvPut(key string, value []byte) error {
	if err := v.checkOpen(); err != nil {
		return wrap("put", key, err)
	}
	if v.readOnly {
		return wrap("put", key, v.readOnlyErr())
	}
	if v.cache.accepts(key, len(value)) {
		if err := v.kvCheckValue(key, value); err != nil {
			return err
		}
		if v.cache.record(key, bytes.Clone(value), false) {
			_, err := v.FlushCache()
			return err
		}
		return nil
	}
	v.cache.dropIfEnabled(key)
	return v.kv.Put(key, value)
}

// kvPutReader streams r into key in one transaction.
func (v *Vault) kvPutReader(key string, r io.Reader, size int64) error {
	if err := v.checkOpen(); err != nil {
		return wrap("put", key, err)
	}
	if v.readOnly {
		return wrap("put", key, v.readOnlyErr())
	}
	v.cache.dropIfEnabled(key)
	return v.kv.PutReader(key, r, size)
}

// kvGet returns key's value, pending cache entries first.
func (v *Vault) kvGet(key string) ([]byte, error) {
	if err := v.checkOpen(); err != nil {
		return nil, wrap("get", key, err)
	}
	if p, ok := v.cache.lookup(key); ok {
		if p.deleted {
			return nil, wrap("get", key, ErrNotFound)
		}
		return bytes.Clone(p.data), nil
	}
	return v.kv.Get(key)
}

// kvGetTo streams key's value to w.
func (v *Vault) kvGetTo(key string, w io.Writer) (int64, error) {
	if err := v.checkOpen(); err != nil {
		return 0, wrap("get", key, err)
	}
	if p, ok := v.cache.lookup(key); ok {
		if p.deleted {
			return 0, wrap("get", key, ErrNotFound)
		}
		n, err := w.Write(p.data)
		return int64(n), wrap("get", key, err)
	}
	return v.kv.GetTo(key, w)
}

// kvExists reports whether key holds a value.
func (v *Vault) kvExists(key string) (bool, error) {
	if err := v.checkOpen(); err != nil {
		return false, wrap("exists", key, err)
	}
	if p, ok := v.cache.lookup(key); ok {
		return !p.deleted, nil
	}
	return v.kv.Exists(key)
}

// kvStat describes key's value as a file: KohakuVault keeps no metadata,
// so the mode is 0644, the owner is the database file's and the times are
// the database file's modification time.
func (v *Vault) kvStat(key string) (Inode, error) {
	if err := v.checkOpen(); err != nil {
		return Inode{}, wrap("stat", key, err)
	}
	var size int64
	if p, ok := v.cache.lookup(key); ok {
		if p.deleted {
			return Inode{}, wrap("stat", key, ErrNotFound)
		}
		size = int64(len(p.data))
	} else {
		var err error
		if size, err = v.kv.Size(key); err != nil {
			return Inode{}, wrap("stat", key, err)
		}
	}
	in := Inode{Kind: KindFile, Mode: 0o644, UID: euid, GID: egid, Nlink: 1, Size: size}
	if st, err := os.Stat(v.path); err == nil {
		in.Mtime = st.ModTime().UnixNano()
		in.Atime, in.Ctime = in.Mtime, in.Mtime
	}
	return in, nil
}

// kvDelete removes key.
func (v *Vault) kvDelete(key string) error {
	if err := v.checkOpen(); err != nil {
		return wrap("delete", key, err)
	}
	if v.readOnly {
		return wrap("delete", key, v.readOnlyErr())
	}
	if v.CacheEnabled() {
		// As in the native vault: a delete of a key that exists only in
		// the cache, or only in the table, must report not-found right.
		exists, err := v.kvExists(key)
		if err != nil {
			return err
		}
		if !exists {
			return wrap("delete", key, ErrNotFound)
		}
		if v.cache.accepts(key, 0) {
			if v.cache.record(key, nil, true) {
				_, err := v.FlushCache()
				return err
			}
			return nil
		}
	}
	return v.kv.Delete(key)
}

// kvRename moves oldKey's value to newKey, replacing any value there.
func (v *Vault) kvRename(oldKey, newKey string) error {
	if err := v.checkOpen(); err != nil {
		return wrap("rename", oldKey, err)
	}
	if _, err := v.FlushCache(); err != nil {
		return wrap("rename", oldKey, err)
	}
	return v.kv.Rename(oldKey, newKey, true)
}

// kvKeys lists the keys under prefix in KohakuVault's order (by bytes),
// after committing pending cache entries so that the listing includes
// them.
func (v *Vault) kvKeys(prefix string) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		if err := v.checkOpen(); err != nil {
			yield("", wrap("list", prefix, err))
			return
		}
		if _, err := v.FlushCache(); err != nil {
			yield("", wrap("list", prefix, err))
			return
		}
		after := ""
		for {
			keys := make([]string, 0, listBatch)
			err := v.kv.Scan(prefix, after, listBatch, func(key string, _ int64) error {
				keys = append(keys, key)
				return nil
			})
			if err != nil {
				yield("", err)
				return
			}
			for _, k := range keys {
				if !yield(k, nil) {
					return
				}
			}
			if len(keys) < listBatch {
				return
			}
			after = keys[len(keys)-1]
		}
	}
}

// kvLen counts the keys, pending cache entries committed first.
func (v *Vault) kvLen() (int, error) {
	if err := v.checkOpen(); err != nil {
		return 0, wrap("len", "", err)
	}
	if _, err := v.FlushCache(); err != nil {
		return 0, wrap("len", "", err)
	}
	n, err := v.kv.Len()
	return int(n), err
}

// kvFlush commits the cache's pending entries in one transaction. If it
// fails, every entry stays pending for the next flush.
func (v *Vault) kvFlush() (int, error) {
	c := &v.cache
	c.flushMu.Lock()
	defer c.flushMu.Unlock()
	c.mu.Lock()
	keys := make([]string, 0, len(c.values))
	pending := make([]*pendingValue, 0, len(c.values))
	for k, p := range c.values {
		keys = append(keys, k)
		pending = append(pending, p)
	}
	c.mu.Unlock()
	if len(keys) == 0 {
		return 0, nil
	}
	items := make([]kohaku.Item, len(keys))
	for i, k := range keys {
		items[i] = kohaku.Item{Key: k, Value: pending[i].data, Delete: pending[i].deleted}
		if items[i].Value == nil && !items[i].Delete {
			items[i].Value = []byte{} // an empty value, never NULL
		}
	}
	if err := v.kv.PutBatch(items); err != nil {
		return 0, wrap("flush", "", err)
	}
	c.mu.Lock()
	for i, k := range keys {
		if c.values[k] == pending[i] { // not rewritten meanwhile
			c.set(k, nil)
		}
	}
	c.mu.Unlock()
	return len(keys), nil
}

// kvClose flushes the cache and closes the table. As for a native vault,
// a failed flush leaves the vault open with every entry pending.
func (v *Vault) kvClose() error {
	if v.closed.Load() {
		return nil
	}
	if _, err := v.FlushCache(); err != nil {
		return wrap("close", "", fmt.Errorf("%w (the vault stays open with its pending data: remove the cause and Close again)", err))
	}
	if !v.closed.CompareAndSwap(false, true) {
		return nil
	}
	v.cache.stopBackground()
	return v.kv.Close()
}

// kvCheckValue applies the header policy and the row limit before a
// value is cached, so that one refused value cannot fail a whole flush:
// see kohaku.Table.CheckPut.
func (v *Vault) kvCheckValue(key string, value []byte) error {
	return wrap("put", key, v.kv.CheckPut(key, value))
}

// kvSync makes every committed change durable.
func (v *Vault) kvSync() error {
	if err := v.checkOpen(); err != nil {
		return wrap("sync", "", err)
	}
	if v.readOnly {
		return nil
	}
	return v.kv.Sync()
}

// kvOptimize commits the cache and rebuilds the file (see
// kohaku.Table.Optimize).
func (v *Vault) kvOptimize() error {
	if _, err := v.FlushCache(); err != nil {
		return wrap("optimize", "", err)
	}
	if v.readOnly {
		return wrap("optimize", "", v.readOnlyErr())
	}
	return v.kv.Optimize()
}

// kvVerify checks the table (see kohaku.Table.Verify) and reports each
// damaged key.
func (v *Vault) kvVerify(report func(Damage)) (int64, error) {
	if _, err := v.FlushCache(); err != nil {
		return 0, err
	}
	return v.kv.Verify(func(key string, err error) {
		d := Damage{Err: err}
		if key != "" {
			d.Keys = []string{key}
		}
		report(d)
	})
}
