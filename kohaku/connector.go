package kohaku

import (
	"context"
	"database/sql/driver"

	"github.com/mattn/go-sqlite3"
)

// connector opens connections of one DSN with a driver whose ConnectHook
// sets the per-connection pragmas, on every connection database/sql opens.
type connector struct {
	dsn string
	drv *sqlite3.SQLiteDriver
}

// Connect implements driver.Connector.
func (c connector) Connect(context.Context) (driver.Conn, error) { return c.drv.Open(c.dsn) }

// Driver implements driver.Connector.
func (c connector) Driver() driver.Driver { return c.drv }
