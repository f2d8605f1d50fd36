package kohaku

import (
	"fmt"

	"github.com/kohakuvault/kvaultfs/store"
)

// headerLen is the length of KohakuVault's value header (spec 5.2).
const headerLen = 10

// checkHeader applies the header-magic policy to a value that begins
// with head (its first bytes, at least headerLen of them when the value
// is that long) and has size bytes. In a B/C table KohakuVault 0.7+ reads
// any value of 10 bytes or more starting 89 4B as a header, failing or
// decoding it, so such a value is refused rather than stored where its
// own format's reader could not read it back. Format A (0.1-0.5) has no
// headers: every value is stored raw.
func (t *Table) checkHeader(head []byte, size int64) error {
	if t.info.Format != FormatBC || size < headerLen || len(head) < 2 || head[0] != 0x89 || head[1] != 0x4B {
		return nil
	}
	return fmt.Errorf("%w: the value starts with the bytes 89 4B, which KohakuVault 0.7 and later "+
		"would read as a value header and fail to return as stored; a native vault (kvaultfs migrate) can hold it",
		store.ErrInvalidArgument)
}

// tooLarge is the error of a value over MaxValueSize.
func tooLarge(size int64) error {
	return fmt.Errorf("%w: a value of %d bytes is over KohakuVault's limit of %d bytes per value; "+
		"copy the table to a native vault with `kvaultfs migrate`, which has no such limit",
		store.ErrTooLarge, size, int64(MaxValueSize))
}
