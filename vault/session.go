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
)

// Sessions. A process that holds inodes open (files open through the
// library or the mount, and the unlinked inode of a streamed put in
// progress) records them under a session row: its pid, the pid's start
// time and the machine's boot id, which any process on the machine can
// check for liveness. An inode with no links is freed once no live
// session holds it: at the last close here, or at the next Open after
// its holder died.

// freeBatchChunks is how many chunk rows one transaction deletes when a
// big file is freed.
const freeBatchChunks = 256

// registeredLimit is how many closed inodes keep their open rows (which
// makes reopening them free) before the rows are pruned.
const registeredLimit = 1024

type session struct {
	mu         sync.Mutex
	id         int64
	registered map[int64]bool // inodes with an open row under this session
}

// sessionID returns this process's session, creating its row on first use.
func (v *Vault) sessionID() (int64, error) {
	s := &v.sess
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.id != 0 {
		return s.id, nil
	}
	me := currentProcess()
	err := v.update("session", "", func(t *tx) error {
		res, err := t.Exec(v.sql(`INSERT INTO {t}_sessions (pid, start_ticks, boot_id, host, started) VALUES (?, ?, ?, ?, ?)`),
			me.pid, me.startTicks, me.bootID, me.host, t.now)
		if err != nil {
			return err
		}
		s.id, err = res.LastInsertId()
		return err
	})
	return s.id, err
}

// registerOpen checks that ino is a regular file, records that this
// process holds it open, and returns its current metadata. A read-only
// vault cannot record anything; its opens are unprotected against other
// processes' deletes (reads then fail with ErrNotFound, never return
// wrong data).
func (v *Vault) registerOpen(ino int64) (Inode, error) {
	var in Inode
	load := func(q querier) error {
		var err error
		if in, err = v.loadInode(q, ino); err != nil {
			return err
		}
		return regularFile(in)
	}
	v.sess.mu.Lock()
	done := v.sess.registered[ino]
	v.sess.mu.Unlock()
	if v.readOnly || done {
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
	v.sess.mu.Lock()
	if v.sess.registered == nil {
		v.sess.registered = make(map[int64]bool)
	}
	v.sess.registered[ino] = true
	prune := len(v.sess.registered) > registeredLimit
	v.sess.mu.Unlock()
	if prune {
		return in, v.unregisterClosed()
	}
	return in, nil
}

// closedInode runs after the last File of ino in this process closed: an
// inode that lost its last link while open is freed now, unless another
// process holds it too.
func (v *Vault) closedInode(ino int64) error {
	if v.readOnly {
		return nil
	}
	var nlink int64
	err := v.r.QueryRow(v.sql(`SELECT nlink FROM {t}_inodes WHERE id = ?`), ino).Scan(&nlink)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && nlink > 0) {
		return nil // the open row stays until pruning; reopening is then free
	}
	if err != nil {
		return wrap("close", "", err)
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

// unregister deletes this session's open rows for inos and frees those
// of them that have no links and no other holder. The inodes leave the
// registered set before the transaction starts, so that an open racing
// with it writes its own record (after this transaction, in the single
// writer's order) instead of trusting one that is being deleted.
func (v *Vault) unregister(inos []int64) error {
	if len(inos) == 0 {
		return nil
	}
	v.sess.mu.Lock()
	for _, ino := range inos {
		delete(v.sess.registered, ino)
	}
	v.sess.mu.Unlock()
	var big, kept []int64
	err := v.update("close", "", func(t *tx) error {
		big, kept = big[:0], kept[:0]
		for _, ino := range inos {
			if v.files.isOpen(ino) {
				kept = append(kept, ino) // opened again meanwhile: the record stays
				continue
			}
			if _, err := t.Exec(v.sql(`DELETE FROM {t}_open WHERE session = ? AND inode = ?`), v.sess.id, ino); err != nil {
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
			switch {
			case holders > 0:
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
		kept = inos // nothing was deleted
	}
	v.sess.mu.Lock()
	for _, ino := range kept {
		v.sess.registered[ino] = true
	}
	v.sess.mu.Unlock()
	for _, ino := range big {
		v.freeOrphan(ino)
	}
	return err
}

// endSession releases everything this process recorded, at Close.
func (v *Vault) endSession() error {
	if v.sess.id == 0 {
		return nil
	}
	if err := v.unregisterClosed(); err != nil {
		return err
	}
	return v.update("close", "", func(t *tx) error {
		if _, err := t.Exec(v.sql(`DELETE FROM {t}_open WHERE session = ?`), v.sess.id); err != nil {
			return err
		}
		_, err := t.Exec(v.sql(`DELETE FROM {t}_sessions WHERE id = ?`), v.sess.id)
		return err
	})
}

// freeOrphan deletes an inode with no links and no holder, in bounded
// transactions. It stops quietly if the inode gained a link or a holder,
// or on error (the next Open collects what is left).
func (v *Vault) freeOrphan(ino int64) {
	for {
		done := false
		err := v.update("free", "", func(t *tx) error {
			var nlink, holders int64
			err := t.QueryRow(v.sql(`SELECT nlink, (SELECT count(*) FROM {t}_open WHERE inode = ?1) FROM {t}_inodes WHERE id = ?1`), ino).Scan(&nlink, &holders)
			if errors.Is(err, sql.ErrNoRows) || (err == nil && (nlink > 0 || holders > 0)) {
				done = true
				return nil
			}
			if err != nil {
				return err
			}
			res, err := t.Exec(v.sql(`DELETE FROM {t}_chunks WHERE rowid IN (SELECT rowid FROM {t}_chunks WHERE inode = ? LIMIT ?)`), ino, freeBatchChunks)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n < freeBatchChunks {
				done = true
				return t.free(ino)
			}
			return nil
		})
		if err != nil || done {
			return
		}
	}
}

// collectOrphans runs at Open: it ends the sessions of processes that
// died and frees inodes that have no links and no live holder, such as
// the partial data of a streamed put cut short by a crash.
func (v *Vault) collectOrphans() error {
	type row struct {
		id         int64
		pid        int
		startTicks int64
		bootID     string
		host       string
	}
	var dead []int64
	rows, err := v.r.Query(v.sql(`SELECT id, pid, start_ticks, boot_id, host FROM {t}_sessions`))
	if err != nil {
		return err
	}
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.id, &r.pid, &r.startTicks, &r.bootID, &r.host); err != nil {
			rows.Close()
			return err
		}
		if !isAlive(r.pid, r.startTicks, r.bootID, r.host) {
			dead = append(dead, r.id)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	if len(dead) > 0 {
		err := v.update("open", "", func(t *tx) error {
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
		// Cleaning up is not needed to open the vault: on a full disk
		// it waits for the next Open, so that the vault still opens and
		// files can be deleted to free space.
		if err != nil && !errors.Is(err, ErrNoSpace) {
			return err
		}
	}
	var orphans []int64
	rows, err = v.r.Query(v.sql(`SELECT id FROM {t}_inodes WHERE nlink = 0
		AND id NOT IN (SELECT inode FROM {t}_open)`))
	if err != nil {
		return err
	}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		orphans = append(orphans, id)
	}
	rows.Close()
	for _, id := range orphans {
		v.freeOrphan(id)
	}
	return rows.Err()
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
