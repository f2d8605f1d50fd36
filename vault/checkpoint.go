package vault

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Checkpoints. In WAL mode every commit appends to the -wal file and a
// checkpoint later copies the pages into the database, with an fsync of
// each. SQLite's automatic checkpoint runs inside the commit that crosses
// its threshold, so one unlucky write (a FUSE request, a small Put) waits
// for two fsyncs and a large copy. Here a background goroutine checkpoints
// instead, and writers never wait on a checkpoint:
//
//   - On its own connection it runs PASSIVE checkpoints, concurrently with
//     writers (PASSIVE neither takes the write lock nor waits on readers),
//     once enough was committed or the vault has been quiet for a moment.
//   - A PASSIVE checkpoint never catches up with a writer that keeps
//     committing, and the log only starts again from its beginning once
//     it is wholly copied and no reader uses it. So once walMaxBytes were
//     committed since the log last started afresh, the goroutine restarts
//     it: a PASSIVE copy first, and only if that copy reached the end of
//     the log (no reader pins an older snapshot, so a restart can work), a
//     RESTART (TRUNCATE when the file is far past journalSizeLimit) on the
//     writer connection with SQLite's busy timeout at 0. Taking the
//     writer connection queues it behind this process's writers like any
//     write; it holds them only for the copy of what was committed since
//     the PASSIVE one, and does not wait on busy (another process
//     writing, a reader on the log): it fails at once and is tried again
//     later. Only once the log is past walThrottleBytes, with the copy
//     complete, it waits up to restartReaderWait for a short read to end.
//   - A writer that commits faster than the disk takes the copies would
//     outrun the checkpoints, and the log would grow without bound. So
//     past walThrottleBytes, and only while the checkpoints make progress
//     (no reader pins the log where it stood, so a restart can work), a
//     writer waits after its commit, holding nothing, until the log has
//     restarted: writers go at the speed of the checkpoints, the way
//     SQLite's own inline checkpoint would make them, but never wait on
//     busy.
//   - While a reader pins the log (a long read transaction in another
//     process: `kvaultfs verify`, a sqlite3 shell, a backup), nothing can
//     be copied past its snapshot and the log cannot restart: the -wal
//     file grows with every commit until the reader ends, and writers are
//     not held up. The restart is retried with backoff (restartBackoffMin
//     to restartBackoffMax), each try a PASSIVE checkpoint that costs
//     writers nothing, and the log is bounded again within one try after
//     the reader has ended.
//
// SQLite's automatic checkpoint (PASSIVE, walAutoCheckpointBytes) stays
// as a safety net should the goroutine stop.
const (
	checkpointSoftBytes    = 16 << 20               // checkpoint in the background after this much WAL
	checkpointIdle         = 250 * time.Millisecond // ... or after this long without a commit
	walMaxBytes            = 64 << 20               // past this the background restarts the log
	walThrottleBytes       = walMaxBytes * 3 / 2    // past this writers wait for a restart that readers allow
	walAutoCheckpointBytes = 256 << 20              // the inline checkpoint, should the background stop
	throttleMaxWait        = time.Second            // the longest one commit waits for a restart
	freshCheckpoint        = 20 * time.Millisecond  // a PASSIVE answer this recent needs no new one
	restartReaderWait      = 50 * time.Millisecond  // how long a restart far past the bound waits for readers
	journalSizeLimit       = 64 << 20
	restartBackoffMin      = 20 * time.Millisecond  // first retry of a restart that readers blocked
	restartBackoffMax      = 250 * time.Millisecond // a try is a PASSIVE checkpoint, cheap to repeat
	// txOverheadPages estimates the b-tree pages a transaction writes
	// besides its chunk data (inode and entry rows, index entries).
	txOverheadPages = 6
)

// checkpointer runs the background maintenance of a writable vault: the
// checkpoints of a WAL vault (above) and the release of free pages
// (vacuum.go). Only its goroutine touches the fields below done.
type checkpointer struct {
	v            *Vault
	db           *sql.DB       // its own connection for PASSIVE checkpoints; nil without WAL
	pending      atomic.Int64  // estimated WAL bytes since the last checkpoint
	sinceRestart atomic.Int64  // estimated WAL bytes since the log last started afresh
	lastNote     atomic.Int64  // time of the last commit, ns
	blocked      atomic.Bool   // the last copy stopped where the one before did: a reader pins the log
	waitMu       sync.Mutex    // guards waitCh; never held while waiting
	waitCh       chan struct{} // closed when the log restarts or a reader blocks it
	ctx          context.Context
	cancel       context.CancelFunc // ends a wait for the writer connection at close
	kick         chan struct{}
	stop         chan struct{}
	done         chan struct{}

	lastCopied int64    // frames copied by the last PASSIVE checkpoint
	last       struct { // the last PASSIVE checkpoint's answer
		logFrames, copied int64
		ok                bool
		at                time.Time
	}
	backoff     time.Duration // current delay between restart tries
	nextRestart time.Time     // no restart try before this
	vac         vacuumState
}

// startCheckpointer starts the background maintenance of a writable vault.
func (v *Vault) startCheckpointer() {
	c := &checkpointer{
		v:    v,
		kick: make(chan struct{}, 1),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	if v.wal {
		c.db = openPool(v.path, &v.opts, checkpointPool, true)
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.waitCh = make(chan struct{})
	c.lastCopied = -1
	v.ckpt = c
	go c.loop()
}

// note records that a transaction committed about bytes of WAL.
func (c *checkpointer) note(bytes int64) {
	if c == nil {
		return
	}
	c.lastNote.Store(time.Now().UnixNano())
	if c.db == nil {
		return
	}
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
		var step <-chan time.Time
		if c.vac.active {
			step = time.After(vacuumStepGap) // the next step, after writers had their turn
		}
		select {
		case <-c.stop:
			return
		case <-c.kick:
			c.pending.Store(0)
			c.passive()
		case <-tick.C:
			quiet := time.Since(time.Unix(0, c.lastNote.Load())) >= checkpointIdle
			if c.pending.Load() > 0 && quiet {
				c.pending.Store(0)
				c.passive()
			}
		case <-step:
		}
		c.maybeRestart()
		c.maybeVacuum()
	}
}

// passive copies what it can of the WAL into the database without
// blocking anyone. It reports the frames in the log and how many of them
// are copied; ok is false when SQLite could not tell (another checkpoint
// was running, or an error, which the next round retries).
func (c *checkpointer) passive() (logFrames, copied int64, ok bool) {
	if c.db == nil {
		return 0, 0, false
	}
	var busy int64
	before := c.sinceRestart.Load()
	err := c.db.QueryRowContext(c.ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &logFrames, &copied)
	ok = err == nil && busy == 0 && logFrames >= 0 && copied >= 0
	c.last.logFrames, c.last.copied, c.last.ok, c.last.at = logFrames, copied, ok, time.Now()
	if !ok {
		return 0, 0, false
	}
	// The log's true length at the start of the checkpoint corrects the
	// estimate (another process may have restarted it, or written to it);
	// what was committed since stays counted.
	c.sinceRestart.Add(logFrames*int64(c.v.pageSize) - before)
	// Blocked is a copy that stopped short where the last one did: a
	// reader that only now and then holds a snapshot for a moment (a
	// streamed get reads one batch per transaction) lets the next copy
	// go further, and writers keep waiting for the restart.
	blocked := copied < logFrames && copied == c.lastCopied
	c.lastCopied = copied
	c.blocked.Store(blocked)
	if blocked || c.sinceRestart.Load() < walThrottleBytes {
		c.wake()
	}
	return logFrames, copied, true
}

// throttle runs after a commit, holding nothing: while the log is past
// walThrottleBytes and no reader keeps it from restarting, the writer
// waits for the background to restart it (at most throttleMaxWait per
// commit, a safety net), so that it cannot outrun the checkpoints.
func (c *checkpointer) throttle() {
	if c == nil || c.db == nil {
		return
	}
	var timer *time.Timer
	for c.sinceRestart.Load() >= walThrottleBytes && !c.blocked.Load() {
		c.waitMu.Lock()
		ch := c.waitCh
		c.waitMu.Unlock()
		select {
		case c.kick <- struct{}{}:
		default:
		}
		if timer == nil {
			timer = time.NewTimer(throttleMaxWait)
			defer timer.Stop()
		}
		select {
		case <-ch:
		case <-timer.C:
			return
		case <-c.stop:
			return
		}
	}
}

// wake ends the waits of throttled writers, to look again.
func (c *checkpointer) wake() {
	c.waitMu.Lock()
	close(c.waitCh)
	c.waitCh = make(chan struct{})
	c.waitMu.Unlock()
}

// maybeRestart restarts the log once it has grown past walMaxBytes,
// when readers let it, never waiting on busy.
func (c *checkpointer) maybeRestart() {
	if c.db == nil || c.sinceRestart.Load() < walMaxBytes || time.Now().Before(c.nextRestart) {
		return
	}
	// Copy first, blocking no one (unless the round's own checkpoint just
	// did). A copy that stops short of the end of the log means a reader
	// holds an older snapshot: a restart cannot work until it ends, so
	// writers are not held up for it.
	logFrames, copied, ok := c.last.logFrames, c.last.copied, c.last.ok
	if time.Since(c.last.at) > freshCheckpoint {
		logFrames, copied, ok = c.passive()
	}
	if ok && c.sinceRestart.Load() < walMaxBytes {
		return // restarted meanwhile (by another process, or by SQLite)
	}
	if !ok || copied < logFrames || !c.restart() {
		c.backoff = min(max(2*c.backoff, restartBackoffMin), restartBackoffMax)
		c.nextRestart = time.Now().Add(c.backoff)
		return
	}
	c.backoff, c.nextRestart = 0, time.Time{}
	c.sinceRestart.Store(0)
	c.pending.Store(0)
	c.wake()
}

// restart runs a RESTART checkpoint, or TRUNCATE when the -wal file has
// grown past journalSizeLimit (a reader held it), on the writer
// connection without waiting on busy, and reports whether the log now
// starts afresh.
func (c *checkpointer) restart() bool {
	// A log that a reader let grow far past its bound is cut at once;
	// otherwise the file is reused, and journalSizeLimit trims it at the
	// next commit (cutting it to nothing at every restart would make the
	// file system allocate it again each time).
	mode := "RESTART"
	if statSize(c.v.path+"-wal") > 2*journalSizeLimit {
		mode = "TRUNCATE"
	}
	// Far past the bound, with the copy complete, only a reader's short
	// transaction can stand in the way: the restart may wait for it a
	// moment, holding this process's writers that long and no longer.
	var wait time.Duration
	if c.sinceRestart.Load() >= walThrottleBytes {
		wait = restartReaderWait
	}
	var busy, logFrames, copied int64
	err := c.v.withWriterBusy(c.ctx, wait, func(conn *sql.Conn) error {
		return conn.QueryRowContext(c.ctx, "PRAGMA wal_checkpoint("+mode+")").Scan(&busy, &logFrames, &copied)
	})
	return err == nil && busy == 0
}

// withWriterBusy runs fn on the writer connection with SQLite's busy
// timeout at wait (0 or a few ms), so that a lock held by another
// connection fails at once instead of holding this process's writers
// (queued behind fn for the connection) for the busy timeout. Waiting for
// the connection itself is waiting for this process's current write,
// which is short.
func (v *Vault) withWriterBusy(ctx context.Context, wait time.Duration, fn func(conn *sql.Conn) error) error {
	conn, err := v.w.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, fmt.Sprintf("PRAGMA busy_timeout = %d", wait.Milliseconds())); err != nil {
		return err
	}
	defer func() {
		restore := fmt.Sprintf("PRAGMA busy_timeout = %d", v.opts.BusyTimeout.Milliseconds())
		if _, err := conn.ExecContext(context.Background(), restore); err != nil {
			// Never hand writers a connection that fails at the first
			// lock: database/sql discards a connection that reports
			// ErrBadConn, and opens a new one with the DSN's timeout.
			conn.Raw(func(any) error { return driver.ErrBadConn })
		}
	}()
	return fn(conn)
}

// stopping reports whether close has begun.
func (c *checkpointer) stopping() bool {
	select {
	case <-c.stop:
		return true
	default:
		return false
	}
}

// close stops the background work and waits for the last step.
func (c *checkpointer) close() {
	if c == nil {
		return
	}
	close(c.stop)
	c.cancel()
	<-c.done
	if c.db != nil {
		c.db.Close()
	}
}
