package kohaku

// This file stands in for survey.go (recognition, branch kv-fixtures)
// until that branch is merged: it defines only what Open uses, with the
// same names, and is deleted by the merge.

import (
	"database/sql"
	"fmt"
	"net/url"
	"strings"

	"github.com/kohakuvault/kvaultfs/store"
)

// Format is the on-disk format of a KohakuVault KV table.
type Format int

// The formats of the spec (KOHAKUVAULT-FORMAT.md): A has an id and a size
// column, B and C share one table shape.
const (
	FormatA Format = iota + 1
	FormatBC
)

// String names the format as the spec does.
func (f Format) String() string {
	switch f {
	case FormatA:
		return "A"
	case FormatBC:
		return "B/C"
	}
	return fmt.Sprintf("Format(%d)", int(f))
}

// TableInfo is a KohakuVault-shaped table found in a file.
type TableInfo struct {
	Name   string
	Format Format
}

// Survey lists the KohakuVault tables of a file.
type Survey struct {
	Tables []TableInfo
}

// SurveyFile finds the KohakuVault-shaped tables of the SQLite file at
// path, read-only.
func SurveyFile(path string) (Survey, error) {
	db, err := sql.Open("sqlite3", fileURI(path, url.Values{"mode": {"ro"}}))
	if err != nil {
		return Survey{}, err
	}
	defer db.Close()
	rows, err := db.Query(`SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name`)
	if err != nil {
		return Survey{}, err
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return Survey{}, err
		}
		names = append(names, n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return Survey{}, err
	}
	var s Survey
	for _, n := range names {
		rows, err := db.Query(`SELECT name, upper(type), "notnull", pk FROM pragma_table_info(?1)`, n)
		if err != nil {
			return Survey{}, err
		}
		var cols []string
		for rows.Next() {
			var name, typ string
			var nn, pk int
			if err := rows.Scan(&name, &typ, &nn, &pk); err != nil {
				rows.Close()
				return Survey{}, err
			}
			cols = append(cols, fmt.Sprintf("%s %s %d %d", name, typ, nn, pk))
		}
		rows.Close()
		switch strings.Join(cols, ",") {
		case "id INTEGER 0 1,key BLOB 1 0,value BLOB 1 0,size INTEGER 1 0":
			s.Tables = append(s.Tables, TableInfo{n, FormatA})
		case "key BLOB 1 1,value BLOB 1 0":
			s.Tables = append(s.Tables, TableInfo{n, FormatBC})
		}
	}
	return s, nil
}

// Choose picks the table named name, or the only one when name is "".
func (s Survey) Choose(name string) (TableInfo, error) {
	for _, t := range s.Tables {
		if t.Name == name || (name == "" && len(s.Tables) == 1) {
			return t, nil
		}
	}
	var names []string
	for _, t := range s.Tables {
		names = append(names, t.Name)
	}
	if name == "" && len(names) > 1 {
		return TableInfo{}, fmt.Errorf("%w: several KohakuVault tables (%s): choose one", store.ErrInvalidArgument, strings.Join(names, ", "))
	}
	return TableInfo{}, fmt.Errorf("%w: no KohakuVault table %q (the file holds: %s)", store.ErrNotFound, name, strings.Join(names, ", "))
}
