package vault

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// A full disk. In WAL mode a committed page lives in the -wal file until
// a checkpoint copies it into the database file, which then grows; only
// when the log is wholly copied does the next transaction start it over,
// reusing the -wal file's space instead of growing it. A disk that fills
// while the log still holds committed pages the database file has no room
// for would be stuck for good: the checkpoint needs space, and so does
// every transaction, a delete included, since the log cannot restart.
//
// So a transaction that adds data commits only if the disk keeps room
// for its own pages in the log, for the checkpoint of everything
// committed (less what the database's free pages absorb) and for
// spaceHeadroom more, which deletes and metadata changes may use: they
// add no data, and the pages they free need no room when checkpointed.
// A write that finds no room fails with ErrNoSpace and changes nothing.
// A write that fails with a full disk all the same (another program took
// the space) checkpoints, truncating the log to give its space back, and
// tries once more. And spaceHeadroom stays allocated past the end of the
// -wal file (reserveLog), so that a delete finds room for its frames
// even on a disk that another program filled to the last byte.
//
// What this costs: a statfs and a stat per transaction that adds data;
// on a nearly full disk, a checkpoint per such transaction; 2 MiB of
// disk held by the -wal file (du shows it). What it cannot do: SQLite
// needs shmRoom free to open a WAL database at all (its -shm index).

// shmRoom is the room a WAL database needs on the disk to be opened by
// its first connection, which truncates the -shm index and grows it again
// by 32 KiB regions (one per 4096 frames of log). The headroom leaves it.
const shmRoom = 64 << 10

// spaceHeadroom is the room kept for deletes and metadata changes.
const spaceHeadroom = 2 << 20

// diskFree returns the bytes an unprivileged writer may still use on the
// disk holding path.
func diskFree(path string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(filepath.Dir(path), &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * st.Bsize, nil
}

// roomFor runs inside a transaction that wrote t.data bytes of chunks,
// before it commits, and fails with ErrNoSpace unless the disk can take
// them and their checkpoint with spaceHeadroom to spare. It costs a
// statfs and a stat; only when the disk has less room than the whole log
// and twice the data does it checkpoint, on the checkpointer's connection
// (PASSIVE: it copies only what is committed and never waits for this
// writer), to count exactly.
func (v *Vault) roomFor(t *tx) error {
	if v.ckpt == nil || t.data == 0 {
		return nil
	}
	free, err := diskFree(v.path)
	if err != nil {
		return nil // cannot tell: let SQLite find out
	}
	var walSize int64
	if st, err := os.Stat(v.path + "-wal"); err == nil {
		walSize = st.Size()
	}
	// What the checkpoint still has to copy is at most the whole log:
	// with room for that, nothing needs a closer look.
	if free >= walSize+2*t.data+spaceHeadroom {
		return nil
	}
	page := int64(v.pageSize)
	var freePages int64
	if err := t.QueryRow("PRAGMA freelist_count").Scan(&freePages); err != nil {
		return err
	}
	// The checkpoint grows the database file by what is not yet copied
	// and this transaction's data, less the free pages it reuses. The log
	// grows by this transaction's pages past the end of the -wal file,
	// after the logFrames frames committed. (With the log wholly copied,
	// the commit may start it over from its beginning instead, but not if
	// a reader still uses it: counting on that could spend the room the
	// checkpoint needs.)
	pending, walGrowth := walSize, t.data
	var busy, logFrames, copied int64
	if err := v.ckpt.db.QueryRow("PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &logFrames, &copied); err == nil {
		pending = (logFrames - copied) * page
		walGrowth = max(0, t.data-max(0, walSize-32-logFrames*(page+24)))
	} // else another checkpoint runs: count the whole log as pending
	growth := max(0, pending+t.data-freePages*page)
	if free, err = diskFree(v.path); err != nil {
		return nil
	}
	t.lowSpace = true
	if free < growth+walGrowth+spaceHeadroom {
		return fmt.Errorf("%w: %d bytes free on the disk, this write needs %d and keeps %d for deletes", ErrNoSpace, free, growth+walGrowth, spaceHeadroom)
	}
	return nil
}

// checkpointAfterFull runs after a transaction failed with a full disk:
// it copies the log into the database and truncates the -wal file, which
// gives its space back for the retry (the log would otherwise keep the
// size it grew to, up to journalSizeLimit). It waits for readers, as a
// full disk may. It reports whether a retry can help (the log was wholly
// copied).
func (v *Vault) checkpointAfterFull(err error) bool {
	if v.ckpt == nil || !errors.Is(classify(err), ErrNoSpace) {
		return false
	}
	var busy, logFrames, copied int64
	if cerr := v.ckpt.db.QueryRow("PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logFrames, &copied); cerr != nil {
		return false
	}
	v.reserveLog()
	return busy == 0
}

// afterLowCommit runs after a transaction that roomFor found the disk
// nearly full for: it copies the log at once, so that little stays for
// a checkpoint that another program could take the room of, and keeps
// spaceHeadroom reserved past the log's end (reserveLog).
func (v *Vault) afterLowCommit() {
	if c := v.ckpt; c != nil && c.db != nil {
		// Straight on the checkpoint connection, leaving the background's
		// bookkeeping to the background: a PASSIVE copy waits for no lock.
		c.db.Exec("PRAGMA wal_checkpoint(PASSIVE)")
	}
	v.reserveLog()
}

// reserveLog allocates spaceHeadroom of disk past the end of the -wal
// file without changing its size or contents (FALLOC_FL_KEEP_SIZE), so
// that the next transactions' frames, which SQLite appends there, find
// room even if another program fills the disk to the last byte: a delete
// then still commits. Safe beside any other connection, since nothing
// SQLite reads changes. File systems without fallocate just do without.
func (v *Vault) reserveLog() {
	f, err := os.OpenFile(v.path+"-wal", os.O_WRONLY, 0)
	if err != nil {
		return
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil {
		unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, st.Size(), spaceHeadroom)
	}
}
