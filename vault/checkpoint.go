package vault

import (
	"database/sql"
	"sync"
	"sync/atomic"
	"time"
)

// Checkpoints. In WAL mode every commit appends to the -wal file and a
// checkpoint later copies the pages into the database, with an fsync of
// each. SQLite's automatic checkpoint runs inside the commit that crosses
// its threshold, so one unlucky write (a FUSE request, a small Put) waits
// for two fsyncs and a large copy. Here a background goroutine with its
// own connection checkpoints instead, concurrently with writers (PASSIVE
// never blocks them), once enough was committed or the vault has been
// quiet for a moment. A PASSIVE checkpoint never catches up with a writer
// that keeps committing, and the WAL only restarts from its beginning once
// it is wholly copied: so once walMaxBytes were committed since the last
// restart, the committing writer itself runs a RESTART checkpoint (after
// any background one), which waits for other writers and lets the next
// commit start the log afresh. The -wal file thus stays near walMaxBytes
// plus one transaction; journalSizeLimit truncates it after the reset.
// SQLite's automatic checkpoint stays as a safety net.
const (
	checkpointSoftBytes    = 16 << 20               // checkpoint in the background after this much WAL
	checkpointIdle         = 250 * time.Millisecond // ... or after this long without a commit
	walMaxBytes            = 64 << 20               // past this the checkpointer makes writers wait
	walAutoCheckpointBytes = 128 << 20              // the inline checkpoint, should the background stop
	journalSizeLimit       = 64 << 20
	// txOverheadPages estimates the b-tree pages a transaction writes
	// besides its chunk data (inode and entry rows, index entries).
	txOverheadPages = 6
)

// checkpointer runs background checkpoints for a writable WAL vault.
type checkpointer struct {
	db           *sql.DB      // its own connection, so writers are never blocked on it
	mu           sync.Mutex   // one checkpoint at a time: SQLite answers busy, not waits
	pending      atomic.Int64 // estimated WAL bytes since the last checkpoint
	sinceRestart atomic.Int64 // estimated WAL bytes since the log last started afresh
	lastNote     atomic.Int64 // time of the last commit, ns
	kick         chan struct{}
	stop         chan struct{}
	done         chan struct{}
}

// startCheckpointer starts background checkpoints on a writable WAL vault.
func (v *Vault) startCheckpointer() {
	c := &checkpointer{
		db:   openPool(v.path, &v.opts, checkpointPool, true),
		kick: make(chan struct{}, 1),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	v.ckpt = c
	go c.loop()
}

// note records that a transaction committed about bytes of WAL.
func (c *checkpointer) note(bytes int64) {
	if c == nil {
		return
	}
	c.lastNote.Store(time.Now().UnixNano())
	c.sinceRestart.Add(bytes)
	if c.pending.Add(bytes) >= checkpointSoftBytes {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
}

func (c *checkpointer) loop() {
	defer close(c.done)
	tick := time.NewTicker(checkpointIdle / 2)
	defer tick.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-c.kick:
		case <-tick.C:
			quiet := time.Since(time.Unix(0, c.lastNote.Load())) >= checkpointIdle
			if c.pending.Load() == 0 || !quiet {
				continue
			}
		}
		c.pending.Store(0)
		c.checkpoint()
	}
}

// checkpoint copies the WAL into the database without blocking writers.
// Errors (busy, say, while SQLite's own checkpoint runs) are left to the
// next round.
func (c *checkpointer) checkpoint() {
	if !c.mu.TryLock() {
		return // a restart is under way
	}
	defer c.mu.Unlock()
	c.db.Exec("PRAGMA wal_checkpoint(PASSIVE)")
}

// bound runs after a commit: once the log has grown past walMaxBytes it
// copies all of it, waiting for other writers, so the next commit starts
// the log afresh.
func (c *checkpointer) bound() {
	if c == nil || c.sinceRestart.Load() < walMaxBytes {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sinceRestart.Load() < walMaxBytes {
		return // another writer just did it
	}
	var busy, logPages, copied int64
	err := c.db.QueryRow("PRAGMA wal_checkpoint(RESTART)").Scan(&busy, &logPages, &copied)
	if err == nil && busy == 0 {
		c.sinceRestart.Store(0)
		c.pending.Store(0)
	}
}

// close stops the background checkpoints and waits for the last one.
func (c *checkpointer) close() {
	if c == nil {
		return
	}
	close(c.stop)
	<-c.done
	c.db.Close()
}
