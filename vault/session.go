package vault

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Sessions. A process that has the vault open for writing gets a
// session row: its pid, the pid's start time and the machine's boot id,
// which any process on the machine can check for liveness.
//
// Which opens are recorded. An open for writing records the inode under
// the session (an open row) in its own write transaction. An open for
// reading writes nothing: reading never waits for the write lock. The
// rows end at the last close in the process.
//
// The rule that keeps unrecorded readers safe: an inode whose last link
// goes is freed at once only if no open row holds it and no other live
// session exists (nobody else could be reading it unrecorded). Otherwise
// it stays as an orphan (nlink 0, its ctime the time of the unlink) and
// may be freed only once no open row holds it and either no other
// session is live or orphanGrace has passed since the unlink. Every
// session sweeps the orphans every sweepEvery: it records the orphans it
// has open unrecorded (so they survive the grace period) and frees the
// orphans that the rule allows. A reader whose session cannot take the
// write lock for a whole grace period may see its file freed; its reads
// then fail (the inode row is gone first), never return wrong bytes.
// Orphans of dead processes are freed by the sweeps and at Open.

// freeBatchChunks is how many chunk rows one transaction deletes when a
// big file is freed.
const freeBatchChunks = 256

// orphanGrace is how long an inode unlinked while other sessions were
// live keeps its data without an open row holding it: long enough for
// every live session to sweep a few times and record it if it reads it.
const orphanGrace = 2 * time.Second

// sweepEvery is how often a session looks for orphans: a small fraction
// of the grace period, so that a reader records its orphans well before
// anyone may free them. A sweep with no orphans is one indexed query.
const sweepEvery = orphanGrace / 4

// freeingSession is the session number of the open row that marks an
// inode whose row is gone and whose chunks are still being deleted
// (sessions are numbered from 1), so that a crash midway is finished by
// the next sweep or Open.
const freeingSession = 0

type session struct {
	id       atomic.Int64 // 0 until the row exists
	starting atomic.Bool  // a background creation of the row is running
	bg       sync.WaitGroup

	mu         sync.Mutex     // guards the fields below; never held across SQL
	registered map[int64]bool // inodes with an open row under this session
	stop, done chan struct{}  // the sweeper's; nil before it starts
	ended      bool           // endSession ran: no sweeper starts any more
}

// errSessionRace rolls back a session row that lost to another one
// created at the same time.
var errSessionRace = errors.New("session created concurrently")

// sessionID returns this process's session, creating its row on first
// use. The id is published inside the creating transaction, before its
// commit, so that no later transaction of this process (the single
// writer runs them in order) ever takes the new row for another
// process's session. Two goroutines that create it at once each try;
// the loser rolls its row back. No lock is held across the transaction.
func (v *Vault) sessionID() (int64, error) {
	if id := v.sess.id.Load(); id != 0 {
		return id, nil
	}
	me := currentProcess()
	var mine int64 // the id this call published, if any
	err := v.update("session", "", func(t *tx) error {
		if mine != 0 { // a retry: the row of the attempt before is gone
			v.sess.id.CompareAndSwap(mine, 0)
			mine = 0
		}
		res, err := t.Exec(v.sql(`INSERT INTO {t}_sessions (pid, start_ticks, boot_id, host, started) VALUES (?, ?, ?, ?, ?)`),
			me.pid, me.startTicks, me.bootID, me.host, t.now)
		if err != nil {
			return err
		}
		id, err := res.LastInsertId()
		if err != nil {
			return err
		}
		if !v.sess.id.CompareAndSwap(0, id) {
			return errSessionRace
		}
		mine = id
		return nil
	})
	if mine != 0 && err != nil {
		v.sess.id.CompareAndSwap(mine, 0) // the commit failed
	}
	if errors.Is(err, errSessionRace) {
		return v.sess.id.Load(), nil
	}
	if err != nil {
		return 0, err
	}
	v.startSweeper()
	return mine, nil
}

// ensureSession makes sure this process has a session without waiting
// for it: an open for reading only needs other processes to see, soon,
// that someone may be reading. Until the row exists the open is not
// protected (see the rule above).
func (v *Vault) ensureSession() {
	if v.readOnly || v.sess.id.Load() != 0 || !v.sess.starting.CompareAndSwap(false, true) {
		return
	}
	v.sess.mu.Lock()
	if v.sess.ended {
		v.sess.mu.Unlock()
		return
	}
	v.sess.bg.Add(1)
	v.sess.mu.Unlock()
	go func() {
		defer v.sess.bg.Done()
		defer v.sess.starting.Store(false)
		v.sessionID() // failure: the next open tries again
	}()
}

// isRegistered reports whether ino has an open row under this session.
func (v *Vault) isRegistered(ino int64) bool {
	v.sess.mu.Lock()
	defer v.sess.mu.Unlock()
	return v.sess.registered[ino]
}

// markRegistered notes that inos have an open row under this session.
func (v *Vault) markRegistered(inos ...int64) {
	v.sess.mu.Lock()
	defer v.sess.mu.Unlock()
	if v.sess.registered == nil {
		v.sess.registered = make(map[int64]bool)
	}
	for _, ino := range inos {
		v.sess.registered[ino] = true
	}
}

// registerOpen checks that ino is a regular file and returns its current
// metadata. An open for writing also records that this process holds the
// inode, in the same write transaction; an open for reading only reads
// (see the rule above). A read-only vault records nothing; its opens are
// unprotected against other processes' deletes (reads then fail, never
// return wrong data).
func (v *Vault) registerOpen(ino int64, write bool) (Inode, error) {
	var in Inode
	load := func(q querier) error {
		var err error
		if in, err = v.loadInode(q, ino); err != nil {
			return err
		}
		return regularFile(in)
	}
	if v.readOnly || !write || v.isRegistered(ino) {
		if !write {
			v.ensureSession()
		}
		return in, v.view("open", "", func(q *sql.Tx) error { return load(q) })
	}
	sid, err := v.sessionID()
	if err != nil {
		return in, err
	}
	err = v.update("open", "", func(t *tx) error {
		if err := load(t); err != nil {
			return err
		}
		_, err := t.Exec(v.sql(`INSERT OR IGNORE INTO {t}_open (session, inode) VALUES (?, ?)`), sid, ino)
		return err
	})
	if err != nil {
		return in, err
	}
	v.markRegistered(ino)
	return in, nil
}

// record writes open rows for inodes this process has open (opened for
// reading, now for writing, or found orphaned by a sweep). An inode
// closed meanwhile gets none. The registered set is updated inside the
// transaction, so that a last close racing with it (which drops the
// inode from the set, then deletes its row in a later transaction)
// never leaves the set claiming a row that is gone.
func (v *Vault) record(inos []int64) error {
	if len(inos) == 0 {
		return nil
	}
	sid, err := v.sessionID()
	if err != nil {
		return err
	}
	var marked []int64
	unmark := func() {
		v.sess.mu.Lock()
		for _, ino := range marked {
			delete(v.sess.registered, ino)
		}
		v.sess.mu.Unlock()
		marked = marked[:0]
	}
	err = v.update("open", "", func(t *tx) error {
		unmark() // a retry: the rows of the attempt before were rolled back
		for _, ino := range inos {
			if !v.files.isOpen(ino) || v.isRegistered(ino) {
				continue // closed meanwhile, or recorded already
			}
			if _, err := t.Exec(v.sql(`INSERT OR IGNORE INTO {t}_open (session, inode) SELECT ?, id FROM {t}_inodes WHERE id = ?`), sid, ino); err != nil {
				return err
			}
			v.markRegistered(ino)
			marked = append(marked, ino)
		}
		return nil
	})
	if err != nil {
		unmark()
	}
	return err
}

// closedInode runs after the last File of ino in this process closed:
// its open row (if it has one) ends now, and an inode that lost its last
// link while open is freed if the rule allows.
func (v *Vault) closedInode(ino int64) error {
	if v.readOnly {
		return nil
	}
	if !v.isRegistered(ino) {
		// Opened for reading only: nothing to delete, unless the inode
		// became an orphan that may have waited for this close.
		var nlink int64
		err := v.r.QueryRow(v.sql(`SELECT nlink FROM {t}_inodes WHERE id = ?`), ino).Scan(&nlink)
		if errors.Is(err, sql.ErrNoRows) || (err == nil && nlink > 0) {
			return nil
		}
		if err != nil {
			return wrap("close", "", err)
		}
	}
	return v.unregister([]int64{ino})
}

// unregisterClosed deletes the open rows of every inode this process no
// longer has open, freeing those that lost all links meanwhile.
func (v *Vault) unregisterClosed() error {
	v.sess.mu.Lock()
	var closed []int64
	for ino := range v.sess.registered {
		if !v.files.isOpen(ino) {
			closed = append(closed, ino)
		}
	}
	v.sess.mu.Unlock()
	return v.unregister(closed)
}

// otherLiveSession reports whether a session other than this process's
// own is live: then someone may be reading any file unrecorded.
func (v *Vault) otherLiveSession(q querier) (bool, error) {
	rows, err := q.Query(v.sql(`SELECT pid, start_ticks, boot_id, host FROM {t}_sessions WHERE id != ?`), v.sess.id.Load())
	if err != nil {
		return false, err
	}
	defer rows.Close()
	for rows.Next() {
		var p process
		if err := rows.Scan(&p.pid, &p.startTicks, &p.bootID, &p.host); err != nil {
			return false, err
		}
		if isAlive(p.pid, p.startTicks, p.bootID, p.host) {
			return true, nil
		}
	}
	return false, rows.Err()
}

// mayFree applies the rule to an inode with no links and no open row
// whose links went at unlinked (its ctime): no other session is live,
// or the grace period has passed.
func (v *Vault) mayFree(q querier, unlinked, now int64) (bool, error) {
	if now-unlinked >= int64(orphanGrace) {
		return true, nil
	}
	live, err := v.otherLiveSession(q)
	return !live, err
}

// unregister deletes this session's open rows for inos and frees those
// of them that have no links and no other holder, when the rule allows.
// The inodes leave the registered set before the transaction starts, so
// that an open racing with it writes its own record (after this
// transaction, in the single writer's order) instead of trusting one
// that is being deleted.
func (v *Vault) unregister(inos []int64) error {
	if len(inos) == 0 {
		return nil
	}
	v.sess.mu.Lock()
	was := make(map[int64]bool, len(inos))
	for _, ino := range inos {
		was[ino] = v.sess.registered[ino]
		delete(v.sess.registered, ino)
	}
	v.sess.mu.Unlock()
	var big, kept []int64
	err := v.update("close", "", func(t *tx) error {
		big, kept = big[:0], kept[:0]
		for _, ino := range inos {
			if !t.claimFree(ino) {
				if was[ino] {
					kept = append(kept, ino) // opened again meanwhile: the record stays
				}
				continue
			}
			if _, err := t.Exec(v.sql(`DELETE FROM {t}_open WHERE session = ? AND inode = ?`), v.sess.id.Load(), ino); err != nil {
				return err
			}
			in, err := v.loadInode(t, ino)
			if errors.Is(err, ErrNotFound) || (err == nil && in.Nlink > 0) {
				continue
			}
			if err != nil {
				return err
			}
			var holders int
			if err := t.QueryRow(v.sql(`SELECT count(*) FROM {t}_open WHERE inode = ?`), ino).Scan(&holders); err != nil {
				return err
			}
			if holders > 0 {
				continue
			}
			ok, err := v.mayFree(t, in.Ctime, t.now)
			switch {
			case err != nil:
				return err
			case !ok: // a sweep frees it after the grace period
			case in.Size > inlineFreeBytes:
				big = append(big, ino)
			default:
				if err := t.free(ino); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		kept = kept[:0] // nothing was deleted
		for _, ino := range inos {
			if was[ino] {
				kept = append(kept, ino)
			}
		}
	}
	v.markRegistered(kept...)
	for _, ino := range big {
		v.freeOrphan(ino)
	}
	return err
}

// startSweeper starts the session's periodic sweep of orphans.
func (v *Vault) startSweeper() {
	s := &v.sess
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stop != nil || s.ended {
		return
	}
	s.stop, s.done = make(chan struct{}), make(chan struct{})
	go func(stop, done chan struct{}) {
		defer close(done)
		tick := time.NewTicker(sweepEvery)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				v.sweep() // an error is retried at the next tick
			}
		}
	}(s.stop, s.done)
}

// stopSweeper stops the sweep and any background creation of the
// session row, and waits for them.
func (v *Vault) stopSweeper() {
	s := &v.sess
	s.mu.Lock()
	s.ended = true
	stop, done := s.stop, s.done
	s.stop = nil
	s.mu.Unlock()
	s.bg.Wait()
	if stop != nil {
		close(stop)
		<-done
	}
}

// sweep applies the rule to the vault's orphans: it records those this
// process reads unrecorded, ends the sessions of dead processes that
// hold some, and frees those the rule allows. Finding the orphans is
// one query on a partial index, so a sweep with none costs next to
// nothing.
func (v *Vault) sweep() error {
	type orphan struct {
		id, ctime int64
		holders   int
	}
	var orphans []orphan
	err := v.read("sweep", "", func(q querier) error {
		rows, err := q.Query(v.sql(`SELECT id, ctime, (SELECT count(*) FROM {t}_open o WHERE o.inode = i.id)
			FROM {t}_inodes i WHERE nlink = 0`))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var o orphan
			if err := rows.Scan(&o.id, &o.ctime, &o.holders); err != nil {
				return err
			}
			orphans = append(orphans, o)
		}
		return rows.Err()
	})
	if err != nil {
		return err
	}
	var mine []int64
	var candidates []orphanRow
	held := false
	for _, o := range orphans {
		switch {
		case v.files.isOpen(o.id):
			if !v.isRegistered(o.id) {
				mine = append(mine, o.id)
			}
		case o.holders > 0:
			held = true
		default:
			candidates = append(candidates, orphanRow{o.id, o.ctime})
		}
	}
	if err := v.record(mine); err != nil {
		return err
	}
	if held {
		if err := v.endDeadSessions(); err != nil {
			return err
		}
	}
	if err := v.freeAllowed(candidates); err != nil {
		return err
	}
	return v.finishFreeing()
}

// orphanRow is an inode with no links and its ctime, the time its last
// link went.
type orphanRow struct{ id, ctime int64 }

// freeAllowed frees the orphans (none held by an open row) that the rule
// allows, asking once whether another session is live.
func (v *Vault) freeAllowed(orphans []orphanRow) error {
	now := time.Now().UnixNano()
	checked, live := false, false
	for _, o := range orphans {
		if now-o.ctime < int64(orphanGrace) && !checked {
			var err error
			if live, err = v.otherLiveSession(v.r); err != nil {
				return wrap("free", "", err)
			}
			checked = true
		}
		if now-o.ctime >= int64(orphanGrace) || !live {
			v.freeOrphan(o.id)
		}
	}
	return nil
}

// endSession releases everything this process recorded, at Close.
func (v *Vault) endSession() error {
	v.stopSweeper()
	if v.sess.id.Load() == 0 {
		return nil
	}
	if err := v.unregisterClosed(); err != nil {
		return err
	}
	return v.update("close", "", func(t *tx) error {
		if _, err := t.Exec(v.sql(`DELETE FROM {t}_open WHERE session = ?`), v.sess.id.Load()); err != nil {
			return err
		}
		_, err := t.Exec(v.sql(`DELETE FROM {t}_sessions WHERE id = ?`), v.sess.id.Load())
		return err
	})
}

// freeOrphan deletes an inode with no links and no holder, in bounded
// transactions. The first deletes the inode row (and marks the inode as
// being freed if chunks remain), so that a reader that had it open
// unrecorded fails from then on instead of reading the holes that the
// later batches leave. It stops quietly if the inode gained a link or a
// holder, or on error (a later sweep or Open finishes the work).
func (v *Vault) freeOrphan(ino int64) {
	done := false
	err := v.update("free", "", func(t *tx) error {
		var nlink, holders int64
		err := t.QueryRow(v.sql(`SELECT nlink, (SELECT count(*) FROM {t}_open WHERE inode = ?1) FROM {t}_inodes WHERE id = ?1`), ino).Scan(&nlink, &holders)
		if errors.Is(err, sql.ErrNoRows) || (err == nil && (nlink > 0 || holders > 0 || !t.claimFree(ino))) {
			done = true // opened here since the sweep looked: a later one frees it
			return nil
		}
		if err != nil {
			return err
		}
		for _, s := range []string{`DELETE FROM {t}_xattrs WHERE inode = ?`, `DELETE FROM {t}_inodes WHERE id = ?`} {
			if _, err := t.Exec(v.sql(s), ino); err != nil {
				return err
			}
		}
		t.afterCommit(func() { v.reads.dropInode(ino) })
		n, err := t.deleteChunkBatch(ino)
		if err != nil || n < freeBatchChunks {
			done = true
			return err
		}
		_, err = t.Exec(v.sql(`INSERT OR IGNORE INTO {t}_open (session, inode) VALUES (?, ?)`), freeingSession, ino)
		return err
	})
	if err == nil && !done {
		v.finishFree(ino)
	}
}

// deleteChunkBatch deletes up to freeBatchChunks chunk rows of ino.
func (t *tx) deleteChunkBatch(ino int64) (int64, error) {
	res, err := t.Exec(t.v.sql(`DELETE FROM {t}_chunks WHERE rowid IN (SELECT rowid FROM {t}_chunks WHERE inode = ? LIMIT ?)`), ino, freeBatchChunks)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// finishFree deletes the chunks of an inode whose row is already gone,
// in bounded transactions, and then its being-freed mark.
func (v *Vault) finishFree(ino int64) error {
	for {
		done := false
		err := v.update("free", "", func(t *tx) error {
			n, err := t.deleteChunkBatch(ino)
			if err != nil || n == freeBatchChunks {
				return err
			}
			done = true
			_, err = t.Exec(v.sql(`DELETE FROM {t}_open WHERE session = ? AND inode = ?`), freeingSession, ino)
			return err
		})
		if err != nil || done {
			return err
		}
	}
}

// finishFreeing finishes every free that a crash or an error cut short.
func (v *Vault) finishFreeing() error {
	var inos []int64
	err := v.read("free", "", func(q querier) error {
		rows, err := q.Query(v.sql(`SELECT inode FROM {t}_open WHERE session = ?`), freeingSession)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var ino int64
			if err := rows.Scan(&ino); err != nil {
				return err
			}
			inos = append(inos, ino)
		}
		return rows.Err()
	})
	if err != nil {
		return err
	}
	for _, ino := range inos {
		if err := v.finishFree(ino); err != nil {
			return err
		}
	}
	return nil
}

// endDeadSessions deletes the sessions of processes that died, with
// their open rows.
func (v *Vault) endDeadSessions() error {
	var dead []int64
	err := v.read("open", "", func(q querier) error {
		rows, err := q.Query(v.sql(`SELECT id, pid, start_ticks, boot_id, host FROM {t}_sessions`))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id int64
			var p process
			if err := rows.Scan(&id, &p.pid, &p.startTicks, &p.bootID, &p.host); err != nil {
				return err
			}
			if !isAlive(p.pid, p.startTicks, p.bootID, p.host) {
				dead = append(dead, id)
			}
		}
		return rows.Err()
	})
	if err != nil || len(dead) == 0 {
		return err
	}
	return v.update("open", "", func(t *tx) error {
		for _, id := range dead {
			if _, err := t.Exec(v.sql(`DELETE FROM {t}_open WHERE session = ?`), id); err != nil {
				return err
			}
			if _, err := t.Exec(v.sql(`DELETE FROM {t}_sessions WHERE id = ?`), id); err != nil {
				return err
			}
		}
		return nil
	})
}

// collectOrphans runs at Open: it ends the sessions of processes that
// died, finishes frees cut short, and frees the inodes that have no
// links and no live holder when the rule allows (such as the partial
// data of a streamed put cut short by a crash); younger orphans are left
// to the live sessions' sweeps.
func (v *Vault) collectOrphans() error {
	// Cleaning up is not needed to open the vault: on a full disk it
	// waits for the next Open or sweep, so that the vault still opens and
	// files can be deleted to free space.
	if err := v.endDeadSessions(); err != nil && !errors.Is(err, ErrNoSpace) {
		return err
	}
	if err := v.finishFreeing(); err != nil && !errors.Is(err, ErrNoSpace) {
		return err
	}
	var orphans []orphanRow
	err := v.read("open", "", func(q querier) error {
		rows, err := q.Query(v.sql(`SELECT id, ctime FROM {t}_inodes WHERE nlink = 0
			AND id NOT IN (SELECT inode FROM {t}_open)`))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var o orphanRow
			if err := rows.Scan(&o.id, &o.ctime); err != nil {
				return err
			}
			orphans = append(orphans, o)
		}
		return rows.Err()
	})
	if err != nil {
		return err
	}
	if err := v.freeAllowed(orphans); err != nil && !errors.Is(err, ErrNoSpace) {
		return err
	}
	return nil
}

// process identifies a process across pid reuse and reboots.
type process struct {
	pid        int
	startTicks int64
	bootID     string
	host       string
}

var (
	selfOnce sync.Once
	self     process
)

func currentProcess() process {
	selfOnce.Do(func() {
		self.pid = os.Getpid()
		self.startTicks, _ = startTicks(self.pid)
		self.bootID = bootID()
		self.host, _ = os.Hostname()
	})
	return self
}

// isAlive reports whether a session's process still runs. A session
// from another host cannot be checked and counts as alive.
func isAlive(pid int, ticks int64, boot, host string) bool {
	me := currentProcess()
	if host != me.host || boot == "" || me.bootID == "" {
		return true
	}
	if boot != me.bootID {
		return false // the machine rebooted since
	}
	t, ok := startTicks(pid)
	return ok && t == ticks
}

// startTicks reads a process's start time (field 22 of /proc/PID/stat),
// which tells a live process from a later one that reused its pid.
func startTicks(pid int) (int64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(b, ')') // the command name may hold spaces
	if i < 0 {
		return 0, false
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 20 {
		return 0, false
	}
	t, err := strconv.ParseInt(fields[19], 10, 64)
	return t, err == nil
}

func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "" // unknown: sessions then count as alive
	}
	return strings.TrimSpace(string(b))
}
