package vault

import (
	"fmt"

	"github.com/kohakuvault/kvaultfs/store"
)

// MaxFileSize is the largest size of a file, and the end of the last
// byte any write may touch (see store.MaxFileSize).
const MaxFileSize = store.MaxFileSize

// CheckRange checks n bytes at off against the file size limit (see
// store.CheckRange).
func CheckRange(off, n int64) error { return store.CheckRange(off, n) }

// checkSize checks a file size against the limit.
func checkSize(size int64) error {
	switch {
	case size < 0:
		return fmt.Errorf("%w: negative size %d", ErrInvalidArgument, size)
	case size > MaxFileSize:
		return fmt.Errorf("%w: size %d is past the largest file size, %d bytes", ErrTooLarge, size, MaxFileSize)
	}
	return nil
}
