package vault

import (
	"database/sql"
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
// quiet for a moment. The automatic checkpoint stays as a safety net at a
// higher threshold, which bounds the -wal file if the background falls
// behind; journalSizeLimit truncates the file after each reset.
const (
	checkpointSoftBytes    = 16 << 20               // checkpoint in the background after this much WAL
	checkpointIdle         = 250 * time.Millisecond // ... or after this long without a commit
	walAutoCheckpointBytes = 128 << 20              // the inline checkpoint, should the background lag
	journalSizeLimit       = 64 << 20
	// txOverheadPages estimates the b-tree pages a transaction writes
	// besides its chunk data (inode and entry rows, index entries).
	txOverheadPages = 6
)

// checkpointer runs background checkpoints for a writable WAL vault.
type checkpointer struct {
	db       *sql.DB      // its own connection, so writers are never blocked on it
	pending  atomic.Int64 // estimated WAL bytes since the last checkpoint
	lastNote atomic.Int64 // time of the last commit, ns
	kick     chan struct{}
	stop     chan struct{}
	done     chan struct{}
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
		// Busy (another checkpoint running, say the inline one) is fine:
		// the pages are copied either way. Any other failure is retried
		// by the next checkpoint, and the inline one bounds the WAL.
		c.db.Exec("PRAGMA wal_checkpoint(PASSIVE)")
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
