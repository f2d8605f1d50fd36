package kohaku

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"

	"github.com/kohakuvault/kvaultfs/store"
)

// Format is the on-disk shape of a KohakuVault KV table (spec section 1).
type Format int

const (
	// FormatA is KohakuVault v0.1.0 … v0.5.0: id INTEGER PRIMARY KEY,
	// key BLOB NOT NULL UNIQUE, value BLOB NOT NULL, size INTEGER NOT NULL.
	FormatA Format = iota + 1
	// FormatBC is KohakuVault v0.6.0 onwards: key BLOB PRIMARY KEY NOT
	// NULL, value BLOB NOT NULL. B and C cannot be told apart on disk
	// (spec 5.3).
	FormatBC
)

// String returns "A" or "B/C".
func (f Format) String() string {
	switch f {
	case FormatA:
		return "A"
	case FormatBC:
		return "B/C"
	}
	return fmt.Sprintf("Format(%d)", int(f))
}

// TableInfo names one KohakuVault KV table and its format.
type TableInfo struct {
	Name   string
	Format Format
}

// Survey is what a SQLite file holds, as far as choosing a store goes.
type Survey struct {
	// Tables is every table of the main schema (ordinary, virtual and
	// shadow tables; no views), without SQLite's own sqlite_* tables,
	// sorted by name.
	Tables []string
	// KV is every table with a KohakuVault KV shape, sorted by name.
	KV []TableInfo

	// what says, for each table of Tables that is not in KV, why not;
	// Choose puts it in its error message.
	what map[string]string
}

// Empty reports whether the file holds no table at all (a missing or
// 0-byte file, or a SQLite file without tables).
func (s Survey) Empty() bool { return len(s.Tables) == 0 }

// Querier runs a query: *sql.DB, *sql.Conn and *sql.Tx all are one.
type Querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// Choose picks the KV table to serve. With a name, that table, which must
// have a KohakuVault KV shape; without one, the only KV table of the file.
// Several KV tables and no name is refused with their names, so that a user
// never gets a table by accident.
func (s Survey) Choose(name string) (TableInfo, error) {
	if name != "" {
		for _, t := range s.KV {
			if t.Name == name {
				return t, nil
			}
		}
		if !slices.Contains(s.Tables, name) {
			msg := fmt.Sprintf("no table %q in the file", name)
			if len(s.KV) > 0 {
				msg += " (KohakuVault tables: " + s.kvNames() + ")"
			}
			return TableInfo{}, newKindError(msg, ErrNoKVTable, store.ErrNotFound)
		}
		what := s.what[name]
		if what == "" {
			what = "its columns are not KohakuVault's"
		}
		return TableInfo{}, newKindError(fmt.Sprintf("table %q is not a KohakuVault table: %s", name, what),
			ErrNotKVTable, store.ErrInvalidArgument)
	}
	switch len(s.KV) {
	case 0:
		msg := "no KohakuVault table in the file"
		if len(s.Tables) > 0 {
			msg += " (tables: " + strings.Join(s.Tables, ", ") + ")"
		}
		return TableInfo{}, newKindError(msg, ErrNoKVTable, store.ErrNotFound)
	case 1:
		return s.KV[0], nil
	}
	return TableInfo{}, newKindError("several KohakuVault tables: "+s.kvNames()+"; choose one with --table",
		ErrSeveralKVTables, store.ErrInvalidArgument)
}

func (s Survey) kvNames() string {
	names := make([]string, len(s.KV))
	for i, t := range s.KV {
		names[i] = t.Name
	}
	return strings.Join(names, ", ")
}

// tableEntry is one row of PRAGMA table_list.
type tableEntry struct {
	name, kind   string
	withoutRowid bool
}

// SurveyDB surveys the main schema through a connection the caller already
// holds. It only reads. Pass a *sql.Tx (or a *sql.Conn inside BEGIN) for one
// consistent snapshot: the survey runs one query per table.
func SurveyDB(ctx context.Context, q Querier) (Survey, error) {
	entries, err := tableList(ctx, q)
	if err != nil {
		return Survey{}, err
	}
	s := Survey{Tables: []string{}, KV: []TableInfo{}, what: map[string]string{}}
	for _, e := range entries {
		s.Tables = append(s.Tables, e.name)
		if e.kind != "table" {
			// Virtual tables (FTS5, vec0) cannot be KV tables, and
			// their module may be missing here, so they are not
			// asked for their columns.
			s.what[e.name] = "a " + e.kind + " table"
			continue
		}
		f, what, err := shapeOf(ctx, q, e)
		if err != nil {
			return Survey{}, err
		}
		if f == 0 {
			s.what[e.name] = what
			continue
		}
		s.KV = append(s.KV, TableInfo{Name: e.name, Format: f})
	}
	return s, nil
}

// tableList lists the tables of the main schema without SQLite's own.
func tableList(ctx context.Context, q Querier) ([]tableEntry, error) {
	rows, err := q.QueryContext(ctx, `SELECT name, type, wr FROM pragma_table_list WHERE schema = 'main' ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	defer rows.Close()
	var out []tableEntry
	for rows.Next() {
		var e tableEntry
		if err := rows.Scan(&e.name, &e.kind, &e.withoutRowid); err != nil {
			return nil, fmt.Errorf("list tables: %w", err)
		}
		// Names starting with sqlite_ (any case) are reserved for
		// SQLite's internal tables (sqlite_schema, sqlite_sequence,
		// sqlite_stat1...).
		if e.kind == "view" || strings.HasPrefix(strings.ToLower(e.name), "sqlite_") {
			continue
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	return out, nil
}

// column is one row of PRAGMA table_xinfo.
type column struct {
	name, typ string
	notNull   bool
	pk        int
	hidden    int
}

// shapeOf returns the KV format of a table, or 0 and a description of what
// the table is instead.
func shapeOf(ctx context.Context, q Querier, e tableEntry) (Format, string, error) {
	// table_xinfo, not table_info: it also lists generated columns, which
	// make the table something KohakuVault did not create.
	rows, err := q.QueryContext(ctx, `SELECT name, type, "notnull", pk, hidden FROM pragma_table_xinfo(?1, 'main') ORDER BY cid`, e.name)
	if err != nil {
		return 0, "", fmt.Errorf("columns of table %q: %w", e.name, err)
	}
	var cols []column
	for rows.Next() {
		var c column
		if err := rows.Scan(&c.name, &c.typ, &c.notNull, &c.pk, &c.hidden); err != nil {
			rows.Close()
			return 0, "", fmt.Errorf("columns of table %q: %w", e.name, err)
		}
		cols = append(cols, c)
	}
	err = rows.Err()
	rows.Close()
	if err != nil {
		return 0, "", fmt.Errorf("columns of table %q: %w", e.name, err)
	}
	what := "columns (" + describe(cols) + ")"
	switch {
	case matches(cols, shapeA):
		// KohakuVault's upsert names ON CONFLICT(key): without a
		// unique index on key alone it fails, so such a table is not
		// one KohakuVault can write.
		ok, err := hasUniqueIndexOnKey(ctx, q, e.name)
		if err != nil {
			return 0, "", err
		}
		if !ok {
			return 0, what + " without a unique index on key", nil
		}
		return FormatA, "", nil
	case matches(cols, shapeBC):
		if e.withoutRowid {
			// KohakuVault streams values through the rowid
			// (incremental blob I/O), which a WITHOUT ROWID
			// table does not have.
			return 0, "a WITHOUT ROWID table with " + what, nil
		}
		return FormatBC, "", nil
	}
	return 0, what, nil
}

// wantColumn is one column of a KV shape.
type wantColumn struct {
	name, typ string
	notNull   bool
	pk        bool
}

// The KV shapes of spec section 8. INTEGER PRIMARY KEY reports notnull 0.
var (
	shapeA = []wantColumn{
		{name: "id", typ: "INTEGER", pk: true},
		{name: "key", typ: "BLOB", notNull: true},
		{name: "value", typ: "BLOB", notNull: true},
		{name: "size", typ: "INTEGER", notNull: true},
	}
	shapeBC = []wantColumn{
		{name: "key", typ: "BLOB", notNull: true, pk: true},
		{name: "value", typ: "BLOB", notNull: true},
	}
)

// matches reports whether cols are exactly want: the same columns in any
// order (KohakuVault's statements name their columns), type names compared
// case-insensitively, no hidden or generated column, the primary key exactly
// the wanted column.
func matches(cols []column, want []wantColumn) bool {
	if len(cols) != len(want) {
		return false
	}
	for _, w := range want {
		i := slices.IndexFunc(cols, func(c column) bool { return strings.EqualFold(c.name, w.name) })
		if i < 0 {
			return false
		}
		c := cols[i]
		if !strings.EqualFold(c.typ, w.typ) || c.notNull != w.notNull || (c.pk == 1) != w.pk || c.pk > 1 || c.hidden != 0 {
			return false
		}
	}
	return true
}

// describe lists columns for an error message: "id INTEGER pk, name TEXT".
func describe(cols []column) string {
	parts := make([]string, len(cols))
	for i, c := range cols {
		p := c.name
		if c.typ != "" {
			p += " " + c.typ
		}
		if c.pk > 0 {
			p += " pk"
		}
		if c.notNull {
			p += " notnull"
		}
		if c.hidden != 0 {
			p += " generated"
		}
		parts[i] = p
	}
	return strings.Join(parts, ", ")
}

// hasUniqueIndexOnKey reports whether a table has a full (not partial)
// unique index whose only column is key, which ON CONFLICT(key) needs.
func hasUniqueIndexOnKey(ctx context.Context, q Querier, table string) (bool, error) {
	rows, err := q.QueryContext(ctx, `SELECT name FROM pragma_index_list(?1, 'main') WHERE "unique" = 1 AND partial = 0`, table)
	if err != nil {
		return false, fmt.Errorf("indexes of table %q: %w", table, err)
	}
	var indexes []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			rows.Close()
			return false, fmt.Errorf("indexes of table %q: %w", table, err)
		}
		indexes = append(indexes, name)
	}
	err = rows.Err()
	rows.Close()
	if err != nil {
		return false, fmt.Errorf("indexes of table %q: %w", table, err)
	}
	for _, idx := range indexes {
		cols, err := indexColumns(ctx, q, idx)
		if err != nil {
			return false, fmt.Errorf("indexes of table %q: %w", table, err)
		}
		if len(cols) == 1 && strings.EqualFold(cols[0], "key") {
			return true, nil
		}
	}
	return false, nil
}

// indexColumns lists the columns of an index (an expression column has no
// name and is returned as "").
func indexColumns(ctx context.Context, q Querier, index string) ([]string, error) {
	rows, err := q.QueryContext(ctx, `SELECT name FROM pragma_index_info(?1, 'main') ORDER BY seqno`, index)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var cols []string
	for rows.Next() {
		var name sql.NullString
		if err := rows.Scan(&name); err != nil {
			return nil, err
		}
		cols = append(cols, name.String)
	}
	return cols, rows.Err()
}
