package vault

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// The write-back cache. With it enabled, Put and Delete only record the
// new value (or the deletion) in memory, and FlushCache commits them all
// in one transaction. Whole values and the dirty chunks of open files
// share one byte budget.

// defaultFileBudget bounds open files' dirty chunks while the write-back
// cache is disabled.
const defaultFileBudget = 64 << 20

// writeCache holds pending whole values and accounts for dirty chunks.
type writeCache struct {
	mu         sync.Mutex
	enabled    bool
	capBytes   int64
	threshold  int64
	room       *sync.Cond // signalled when dirty bytes are freed or a write-out ends
	outRunning bool       // a background write-out is under way
	outStuck   bool       // the last write-out could free nothing
	values     map[string]*pendingValue
	dirs       map[string]int // live pending puts below each directory path
	valueBytes int64          // sum of entry sizes
	dirtyBytes int64          // bytes of open files' dirty chunks
	seq        uint64

	// flushMu serializes flushes; a write that bypasses the cache takes it
	// to be sure no flush in progress is about to commit an older value.
	flushMu sync.Mutex

	idle     time.Duration // background flush after this quiet time; 0 = off
	lastPut  time.Time
	stop     chan struct{}
	stopped  chan struct{}
	bufMu    sync.Mutex
	freeBufs map[int][][]byte // chunk buffers for reuse, by size
}

// pendingValue is a cached put or, with deleted set, a cached delete.
type pendingValue struct {
	data    []byte
	deleted bool
	seq     uint64 // changes on every write of the key
	mtime   int64
}

func (p *pendingValue) size(key string) int64 { return int64(len(key) + len(p.data)) }

func (c *writeCache) init() {
	c.room = sync.NewCond(&c.mu)
	c.values = make(map[string]*pendingValue)
	c.dirs = make(map[string]int)
	c.freeBufs = make(map[int][][]byte)
}

// CacheOption configures EnableCache.
type CacheOption func(*writeCache)

// FlushWhenIdle makes a background goroutine flush the cache once no put
// or delete has happened for d. Close stops it.
func FlushWhenIdle(d time.Duration) CacheOption {
	return func(c *writeCache) { c.idle = d }
}

// EnableCache turns on the write-back cache: puts and deletes are held in
// memory (up to capBytes, counting key and value bytes) and committed in
// one transaction by FlushCache, DisableCache, Close, or once
// flushThreshold bytes are pending. A value larger than capBytes is
// written directly. Everything in this process sees the cached state;
// other processes see it after the flush, and between processes the last
// flush wins. Calling it again changes the sizes.
func (v *Vault) EnableCache(capBytes, flushThreshold int64, opts ...CacheOption) error {
	if capBytes <= 0 || flushThreshold <= 0 || flushThreshold > capBytes {
		return wrap("enable cache", "", fmt.Errorf("%w: need 0 < flushThreshold (%d) <= capBytes (%d)", ErrInvalidArgument, flushThreshold, capBytes))
	}
	if v.readOnly {
		return wrap("enable cache", "", v.readOnlyErr())
	}
	if err := v.checkOpen(); err != nil {
		return wrap("enable cache", "", err)
	}
	c := &v.cache
	c.stopBackground()
	c.mu.Lock()
	c.enabled, c.capBytes, c.threshold, c.idle = true, capBytes, flushThreshold, 0
	for _, o := range opts {
		o(c)
	}
	idle := c.idle
	c.mu.Unlock()
	if idle > 0 {
		c.startBackground(v, idle)
	}
	return nil
}

// DisableCache flushes the cache and turns it off. If the flush fails the
// cache stays on, with the entries that were not written, and the error
// is returned.
func (v *Vault) DisableCache() error {
	if _, err := v.FlushCache(); err != nil {
		return err
	}
	v.cache.stopBackground()
	v.cache.mu.Lock()
	defer v.cache.mu.Unlock()
	if len(v.cache.values) > 0 { // written by another goroutine meanwhile
		return wrap("disable cache", "", fmt.Errorf("%w: new writes arrived during the flush; flush again", ErrBusy))
	}
	v.cache.enabled = false
	return nil
}

// CacheEnabled reports whether the write-back cache is on.
func (v *Vault) CacheEnabled() bool {
	v.cache.mu.Lock()
	defer v.cache.mu.Unlock()
	return v.cache.enabled
}

// lookup returns the pending entry for key, if any.
func (c *writeCache) lookup(key string) (pendingValue, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.values[key]
	if p == nil {
		return pendingValue{}, false
	}
	return *p, true
}

// accepts reports whether a value of n bytes goes through the cache.
func (c *writeCache) accepts(key string, n int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.enabled && int64(len(key)+n) <= c.capBytes
}

// record stores a pending put (data != nil or deleted == false) or delete.
// It reports whether the threshold is now crossed.
func (c *writeCache) record(key string, data []byte, deleted bool) (flush bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	c.set(key, &pendingValue{data: data, deleted: deleted, seq: c.seq, mtime: time.Now().UnixNano()})
	c.lastPut = time.Now()
	return c.valueBytes+c.dirtyBytes >= c.threshold
}

// set replaces key's entry (nil removes it), keeping the byte count and
// the directory counts right. c.mu must be held.
func (c *writeCache) set(key string, p *pendingValue) {
	old := c.values[key]
	if old != nil {
		c.valueBytes -= old.size(key)
	}
	if p != nil {
		c.valueBytes += p.size(key)
		c.values[key] = p
	} else {
		delete(c.values, key)
	}
	wasLive, isLive := old != nil && !old.deleted, p != nil && !p.deleted
	if wasLive == isLive {
		return
	}
	delta := 1
	if wasLive {
		delta = -1
	}
	parts, ok := treeParts(key)
	if !ok {
		return
	}
	for i := 1; i < len(parts); i++ {
		dir := joinParts(parts[:i])
		if c.dirs[dir] += delta; c.dirs[dir] == 0 {
			delete(c.dirs, dir)
		}
	}
}

// checkPath refuses a put that the cached state makes impossible: a
// parent that is a pending file, or a key that pending puts use as a
// directory.
func (c *writeCache) checkPath(kp keyPath) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := 1; i < len(kp.parts); i++ {
		dir := joinParts(kp.parts[:i])
		if p := c.values[dir]; p != nil && !p.deleted {
			return fmt.Errorf("%w: %q is a file", ErrNotDir, dir)
		}
	}
	if c.dirs[kp.key] > 0 {
		return ErrIsDir
	}
	return nil
}

// isDir reports whether pending puts use key as a directory.
func (c *writeCache) isDir(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dirs[key] > 0
}

// deletedParent reports whether a parent directory of kp is a pending
// delete (of a stored file that a flush must remove first).
func (c *writeCache) deletedParent(kp keyPath) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := 1; i < len(kp.parts); i++ {
		if p := c.values[joinParts(kp.parts[:i])]; p != nil && p.deleted {
			return true
		}
	}
	return false
}

// dropIfEnabled is drop for writes that bypass the cache.
func (c *writeCache) dropIfEnabled(key string) {
	c.mu.Lock()
	_, pending := c.values[key]
	c.mu.Unlock()
	if pending {
		c.drop(key)
	}
}

// drop forgets key's pending entry, waiting for a flush in progress, so a
// direct write of key cannot be overtaken by an older cached value.
func (c *writeCache) drop(key string) {
	c.flushMu.Lock()
	defer c.flushMu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.set(key, nil)
}

// dropUnstored forgets key's pending entry if, once no flush is running,
// isStored finds the key absent from the database, and reports whether
// it did. A flush that ran meanwhile may have stored some version of the
// key (even an older one): then the caller must cache a delete instead.
func (c *writeCache) dropUnstored(key string, isStored func() (bool, error)) (bool, error) {
	c.flushMu.Lock()
	defer c.flushMu.Unlock()
	if stored, err := isStored(); err != nil || stored {
		return false, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.set(key, nil)
	return true, nil
}

// roomFor reports whether n more bytes fit under capBytes.
func (c *writeCache) roomFor(n int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.valueBytes+c.dirtyBytes+n <= c.capBytes
}

// snapshot returns the pending keys under prefix, sorted in listing order.
func (c *writeCache) snapshot(prefix string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var keys []string
	for k := range c.values {
		if len(k) >= len(prefix) && k[:len(prefix)] == prefix {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, compareKeys)
	return keys
}

// snapshotStates is snapshot with each key's state: true for a pending
// delete, false for a pending put.
func (c *writeCache) snapshotStates(prefix string) ([]string, map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var keys []string
	deleted := make(map[string]bool)
	for k, p := range c.values {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
			deleted[k] = p.deleted
		}
	}
	slices.SortFunc(keys, compareKeys)
	return keys, deleted
}

// FlushCache commits every pending put and delete in one transaction and
// returns how many it committed. An entry that cannot be written (say,
// "a/b" after another process made "a" a file) is kept and reported in
// the error while the others commit; if the transaction itself fails
// (disk full, read-only file) every entry is kept for the next flush. An
// entry written again while the flush runs stays pending.
func (v *Vault) FlushCache() (int, error) {
	if v.kv != nil {
		return v.kvFlush()
	}
	c := &v.cache
	c.flushMu.Lock()
	defer c.flushMu.Unlock()
	type item struct {
		key string
		p   *pendingValue
	}
	c.mu.Lock()
	items := make([]item, 0, len(c.values))
	for k, p := range c.values {
		items = append(items, item{k, p})
	}
	c.mu.Unlock()
	if len(items) == 0 {
		return 0, nil
	}
	// Deletes first, then puts in key order: a cached delete of "a"
	// followed by a put of "a/b" must free the name before it is reused.
	slices.SortFunc(items, func(a, b item) int {
		if a.p.deleted != b.p.deleted {
			if a.p.deleted {
				return -1
			}
			return 1
		}
		return compareKeys(a.key, b.key)
	})
	// The first attempt runs the entries straight; only if one of them
	// cannot be written is the transaction redone with a savepoint per
	// entry, so that the others still commit.
	var done []item
	var failed []error
	flush := func(careful bool) error {
		return v.update("flush", "", func(t *tx) error {
			done, failed = done[:0], failed[:0]
			if !careful {
				t.dirs = make(map[string]int64)
			}
			for _, it := range items {
				apply := func() error {
					kp, err := parseKey(it.key)
					if err != nil {
						return err
					}
					if it.p.deleted {
						if err := t.deleteKey(kp); err != nil && !errors.Is(err, ErrNotFound) {
							return err
						}
						return nil
					}
					return t.putValue(kp, it.p.data, it.p.mtime)
				}
				var err error
				if careful {
					err = t.savepoint(apply)
				} else {
					err = apply()
				}
				switch {
				case err == nil:
					done = append(done, it)
				case isEntryError(err) && !careful:
					return errFlushCarefully
				case isEntryError(err):
					failed = append(failed, wrap("flush", it.key, err))
				default:
					return err
				}
			}
			if flushHook != nil {
				return flushHook(v)
			}
			return nil
		})
	}
	err := flush(false)
	if errors.Is(err, errFlushCarefully) {
		err = flush(true)
	}
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	for _, it := range done {
		if c.values[it.key] == it.p { // not rewritten meanwhile
			c.set(it.key, nil)
		}
	}
	c.mu.Unlock()
	return len(done), errors.Join(failed...)
}

// flushHook, when set (by tests only), runs inside FlushCache's
// transaction after the entries are written; an error it returns fails
// the transaction as a database error would. Nil in production.
var flushHook func(v *Vault) error

// errFlushCarefully aborts a flush's first attempt when an entry fails.
var errFlushCarefully = errors.New("an entry failed: flush again entry by entry")

// isEntryError reports whether a flush error belongs to one entry (a key
// that cannot be written as it stands) rather than to the transaction.
func isEntryError(err error) bool {
	return errors.Is(err, ErrInvalidArgument) || errors.Is(err, ErrPermission) || errors.Is(err, ErrExists)
}

// chunkBuf returns a buffer of n bytes for a dirty chunk, reusing freed
// ones: first-touched memory is slow, recycled memory is not.
func (c *writeCache) chunkBuf(n int) []byte {
	c.bufMu.Lock()
	defer c.bufMu.Unlock()
	if free := c.freeBufs[n]; len(free) > 0 {
		b := free[len(free)-1]
		c.freeBufs[n] = free[:len(free)-1]
		return b
	}
	return make([]byte, n)
}

// spareChunkBytes bounds the freed chunk buffers kept for reuse. While a
// big write runs, the buffers cycle through the dirty set and back; what
// is kept beyond that is memory the process holds for nothing once the
// write ends (and that the garbage collector's headroom doubles).
const spareChunkBytes = 8 << 20

// putChunkBuf returns a buffer for reuse, keeping at most
// spareChunkBytes of them.
func (c *writeCache) putChunkBuf(b []byte) {
	c.bufMu.Lock()
	defer c.bufMu.Unlock()
	if free := c.freeBufs[len(b)]; (len(free)+1)*len(b) <= spareChunkBytes {
		c.freeBufs[len(b)] = append(free, b)
	}
}

// startBackground flushes after every quiet interval until stopped.
func (c *writeCache) startBackground(v *Vault, idle time.Duration) {
	c.stop, c.stopped = make(chan struct{}), make(chan struct{})
	go func(stop, stopped chan struct{}) {
		defer close(stopped)
		tick := time.NewTicker(max(idle/4, time.Millisecond)) // a period must be positive
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				c.mu.Lock()
				quiet := len(c.values) > 0 && time.Since(c.lastPut) >= idle
				c.mu.Unlock()
				if quiet {
					v.FlushCache() // a failure keeps the entries; the next tick retries
				}
			}
		}
	}(c.stop, c.stopped)
}

// stopBackground stops the background flusher and waits for it.
func (c *writeCache) stopBackground() {
	if c.stop != nil {
		close(c.stop)
		<-c.stopped
		c.stop, c.stopped = nil, nil
	}
}
