package vault

import (
	"context"
	"database/sql/driver"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mattn/go-sqlite3"
)

// sqlCounter counts the statements a vault runs and the rows they
// return, on every connection of one database file: the cost of an
// operation, measured without a clock.
type sqlCounter struct {
	stmts atomic.Int64
	rows  atomic.Int64
}

func (c *sqlCounter) reset() { c.stmts.Store(0); c.rows.Store(0) }

// counting installs a counter for connections to databases under dir
// (opened after the call) until the test ends.
func counting(t testing.TB, dir string) *sqlCounter {
	t.Helper()
	c := &sqlCounter{}
	dir = filepath.ToSlash(dir)
	hook := func(dsn string, conn *sqlite3.SQLiteConn) driver.Conn {
		if !strings.Contains(dsn, dir) {
			return conn
		}
		return &countConn{SQLiteConn: conn, c: c}
	}
	if !connHook.CompareAndSwap(nil, &hook) {
		t.Fatal("another test's statement counter is installed")
	}
	t.Cleanup(func() { connHook.Store(nil) })
	return c
}

// countConn is a connection that counts what it runs.
type countConn struct {
	*sqlite3.SQLiteConn
	c *sqlCounter
}

func (cc *countConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	cc.c.stmts.Add(1)
	rows, err := cc.SQLiteConn.QueryContext(ctx, query, args)
	if err != nil {
		return nil, err
	}
	return &countRows{Rows: rows, c: cc.c}, nil
}

func (cc *countConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	cc.c.stmts.Add(1)
	return cc.SQLiteConn.ExecContext(ctx, query, args)
}

func (cc *countConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	st, err := cc.SQLiteConn.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	return &countStmt{SQLiteStmt: st.(*sqlite3.SQLiteStmt), c: cc.c}, nil
}

// countStmt is a prepared statement that counts its runs.
type countStmt struct {
	*sqlite3.SQLiteStmt
	c *sqlCounter
}

func (cs *countStmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	cs.c.stmts.Add(1)
	rows, err := cs.SQLiteStmt.QueryContext(ctx, args)
	if err != nil {
		return nil, err
	}
	return &countRows{Rows: rows, c: cs.c}, nil
}

func (cs *countStmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	cs.c.stmts.Add(1)
	return cs.SQLiteStmt.ExecContext(ctx, args)
}

// countRows counts the rows a query returns.
type countRows struct {
	driver.Rows
	c *sqlCounter
}

func (r *countRows) Next(dest []driver.Value) error {
	err := r.Rows.Next(dest)
	if err == nil {
		r.c.rows.Add(1)
	}
	return err
}
