package migrate

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"

	"github.com/kohakuvault/kvaultfs/kohaku"
	"github.com/kohakuvault/kvaultfs/store"
	"github.com/kohakuvault/kvaultfs/vault"
)

// holding is what a file holds, as far as migration cares.
type holding struct {
	path    string
	missing bool // no such file
	survey  kohaku.Survey
	native  bool // a native vault with the chosen table prefix
}

// empty reports whether the file can become a new store: missing, 0 bytes,
// or a SQLite file without tables.
func (h holding) empty() bool { return h.missing || h.survey.Empty() }

// inspect surveys path without changing it. A file that is not SQLite is
// an error naming what it is.
func inspect(path, prefix string) (holding, error) {
	h := holding{path: path}
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		h.missing = true
		return h, nil
	} else if err != nil {
		return h, err
	}
	s, err := kohaku.SurveyFile(path)
	if err != nil {
		return h, err
	}
	h.survey = s
	h.native = slices.Contains(s.Tables, prefix+"_meta")
	return h, nil
}

// describe says what a file holds, for an error message.
func (h holding) describe() string {
	switch {
	case h.missing:
		return "no such file"
	case h.survey.Empty() && fileSize(h.path) == 0:
		return "an empty file"
	case h.survey.Empty():
		return "a SQLite database without tables"
	}
	var parts []string
	if h.native {
		parts = append(parts, "a kvaultfs vault")
	}
	if len(h.survey.KV) > 0 {
		names := make([]string, len(h.survey.KV))
		for i, t := range h.survey.KV {
			names[i] = fmt.Sprintf("%s (format %s)", t.Name, t.Format)
		}
		parts = append(parts, "KohakuVault tables "+strings.Join(names, ", "))
	}
	if len(parts) == 0 {
		parts = append(parts, "tables of another program: "+strings.Join(h.survey.Tables, ", "))
	}
	return strings.Join(parts, " and ")
}

// sameFile refuses a destination that is the source itself.
func sameFile(src, dst string) error {
	a, err := os.Stat(src)
	if err != nil {
		return nil // reported by the source's own checks
	}
	b, err := os.Stat(dst)
	if err != nil {
		return nil
	}
	if os.SameFile(a, b) {
		return fmt.Errorf("%w: %s and %s are the same file", store.ErrInvalidArgument, src, dst)
	}
	return nil
}

// vaultPrefix is the native vault's table prefix of o.
func (o Options) vaultPrefix() string {
	if o.VaultTable == "" {
		return vault.DefaultTable
	}
	return o.VaultTable
}

// openVault opens the native vault at path. vault.Open also serves
// KohakuVault tables, and prefers one named like the prefix: migration
// needs the native vault itself, so such an open is refused.
func openVault(path string, o Options, readOnly bool) (*vault.Vault, error) {
	vo := vault.DefaultOptions()
	vo.Table = o.vaultPrefix()
	vo.ReadOnly = readOnly
	v, err := vault.Open(path, vo)
	if err != nil {
		return nil, err
	}
	if table, _, ok := v.Kohaku(); ok {
		v.Close()
		return nil, fmt.Errorf("%w: the file's KohakuVault table %s has the name of the vault prefix, and opening serves it instead of the kvaultfs vault",
			store.ErrInvalidArgument, table)
	}
	return v, nil
}

// fileSize returns the size of the file at path, -1 if it cannot be read.
func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return -1
	}
	return fi.Size()
}
