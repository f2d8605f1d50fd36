package vault

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"os"
	"time"

	"github.com/mattn/go-sqlite3"
)

// Releasing free pages. Deleting a file frees its pages inside the
// database, where later writes reuse them, but the file keeps its size.
// Vaults are created with auto_vacuum = INCREMENTAL, so SQLite can move
// pages from the end of the file into free ones and cut the file short
// (PRAGMA incremental_vacuum). The checkpointer's goroutine does so in the
// background once the free pages pass vacuumThreshold of the file. Every
// vacuumCheckEvery it counts the free pages (three pragmas in one short
// read transaction, so that pages freed by another process, a `kvaultfs
// rm` say, are found too); past the threshold it releases every free page
// in steps of vacuumStepBytes, each its own short write transaction on the
// writer connection, taken when this process's writer is free and with
// the busy timeout at 0 (another process writing makes the step fail at
// once, to be tried again), vacuumStepGap apart so writers get their turn.
// With WAL the file itself shrinks at the next checkpoint that copies the
// whole log.
//
// The threshold is the smaller of 64 MiB and a tenth of the file, but at
// least 4 MiB: free pages are reused by the next writes, so releasing
// them costs work (page moves, and with WAL a second copy) that churn
// would undo, while a user who deletes a large file expects the disk
// space back. A vault created without auto-vacuum (auto_vacuum = NONE)
// keeps its free pages until Optimize, which converts it.
const (
	vacuumCheckEvery   = time.Second
	vacuumMaxThreshold = 64 << 20
	vacuumMinThreshold = 4 << 20
	vacuumFileFraction = 10
	vacuumStepBytes    = 4 << 20
	vacuumStepGap      = 5 * time.Millisecond
	vacuumMaxBusy      = 200 // failed steps in a row before waiting for the next check
)

// vacuumThreshold is the free space in a file of fileBytes past which the
// background releases it.
func vacuumThreshold(fileBytes int64) int64 {
	return max(vacuumMinThreshold, min(vacuumMaxThreshold, fileBytes/vacuumFileFraction))
}

// vacuumState is the checkpointer goroutine's own record of the work.
type vacuumState struct {
	active    bool      // releasing pages, one step per round
	lastCheck time.Time // when the free pages were last counted
	busy      int       // steps in a row that found the database busy
}

// spaceState is what the file holds besides live pages.
type spaceState struct {
	pages, free int64 // page_count and freelist_count
	incremental bool  // auto_vacuum = INCREMENTAL
}

// space reads the page counts of the database (one snapshot).
func (v *Vault) space(ctx context.Context) (spaceState, error) {
	var st spaceState
	t, err := v.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return st, err
	}
	defer t.Rollback()
	// PRAGMA auto_vacuum answers what the connection last read of the
	// header, which a pooled connection may have read before an Optimize
	// converted the file: it is asked after a pragma that reads page 1
	// in this transaction.
	var mode int
	for _, p := range []struct {
		q   string
		dst any
	}{
		{"PRAGMA page_count", &st.pages},
		{"PRAGMA freelist_count", &st.free},
		{"PRAGMA auto_vacuum", &mode},
	} {
		if err := t.QueryRowContext(ctx, p.q).Scan(p.dst); err != nil {
			return st, fmt.Errorf("%s: %w", p.q, err)
		}
	}
	st.incremental = mode == 2
	return st, nil
}

// maybeVacuum starts releasing free pages once they pass the threshold,
// and runs one step while it is under way.
func (c *checkpointer) maybeVacuum() {
	if c.stopping() {
		return
	}
	ps := int64(c.v.pageSize)
	if !c.vac.active {
		if time.Since(c.vac.lastCheck) < vacuumCheckEvery {
			return
		}
		c.vac.lastCheck = time.Now()
		st, err := c.v.space(c.ctx)
		if err != nil || !st.incremental || st.free*ps < vacuumThreshold(st.pages*ps) {
			return // an error is retried at the next check
		}
		c.vac.active = true
	}
	freed, err := c.vacuumStep()
	if err != nil {
		if c.vac.busy++; c.vac.busy >= vacuumMaxBusy {
			c.vac.active, c.vac.busy = false, 0 // count again at the next check
		}
		return
	}
	c.vac.busy = 0
	if freed < c.stepPages() {
		c.vac.active = false // the free list is empty
	}
	if freed > 0 {
		// Each released page rewrites a moved page or a pointer-map entry:
		// about one page of WAL each, for the checkpoints to account.
		c.note(freed * ps)
	}
}

func (c *checkpointer) stepPages() int64 {
	return max(1, vacuumStepBytes/int64(c.v.pageSize))
}

// vacuumStep releases up to stepPages free pages in one write
// transaction, without waiting for a lock, and returns how many it
// released.
func (c *checkpointer) vacuumStep() (int64, error) {
	var freed int64
	err := c.v.withWriterBusy(c.ctx, 0, func(conn *sql.Conn) error {
		if _, err := conn.ExecContext(c.ctx, "BEGIN IMMEDIATE"); err != nil {
			return err
		}
		n, err := incrementalVacuum(c.ctx, conn, c.stepPages())
		if err == nil {
			_, err = conn.ExecContext(c.ctx, "COMMIT")
		}
		if err != nil {
			conn.ExecContext(context.Background(), "ROLLBACK")
			// Never give the connection back inside a transaction.
			conn.Raw(func(dc any) error {
				if sc, ok := dc.(*sqlite3.SQLiteConn); ok && !sc.AutoCommit() {
					return driver.ErrBadConn
				}
				return nil
			})
			return err
		}
		freed = n
		return nil
	})
	return freed, err
}

// incrementalVacuum runs PRAGMA incremental_vacuum(pages). SQLite frees
// one page per step of the statement, so it is read to the end: Exec
// would step it once and free one page.
func incrementalVacuum(ctx context.Context, conn *sql.Conn, pages int64) (int64, error) {
	rows, err := conn.QueryContext(ctx, fmt.Sprintf("PRAGMA incremental_vacuum(%d)", pages))
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	var n int64
	for rows.Next() {
		n++
	}
	return n, rows.Err()
}

// vacuum rebuilds the file (VACUUM). VACUUM applies the connection's
// auto_vacuum setting, so setting INCREMENTAL first converts a vault
// created without it, whose free pages the background can then release
// too. Both run on one connection, where the setting lives.
func (v *Vault) vacuum() error {
	ctx := context.Background()
	conn, err := v.w.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "PRAGMA auto_vacuum = INCREMENTAL"); err != nil {
		return fmt.Errorf("PRAGMA auto_vacuum = INCREMENTAL: %w", err)
	}
	_, err = conn.ExecContext(ctx, "VACUUM")
	return err
}

// statSize returns a file's size, 0 if it cannot be read (a -wal that
// does not exist).
func statSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}
