package store

import "fmt"

// MaxFileSize is the largest size of a file in any store, and the end of the last
// byte any write may touch: 1 PiB (2^50 bytes). Every size and offset
// that enters the package (WriteAt, Append, Truncate, Seek, SetAttr,
// PutReader, and the mount's write, truncate, fallocate and lseek
// through them) is checked against it; past it the call fails with
// ErrTooLarge (EFBIG in the mount) and changes nothing, and reads past it
// are the end of the file.
//
// Why 2^50: chunk arithmetic must stay inside int64 without thinking.
// With off and n each at most 2^50, off+n is at most 2^51; with chunks of
// at most 64 MiB (2^26), size+chunkSize-1, idx*chunkSize and
// (idx+1)*chunkSize are all below 2^51, a margin of 2^12 under
// overflow. It is also more than any stored file can hold (an SQLite
// database ends at 2^32 pages of 64 KiB, 256 TiB) and 64 times ext4's own
// limit (16 TiB with 4 KiB blocks), so only sparse files can meet it.
// 2^62 would also keep off+n in range, but leaves no room for the
// chunk-rounding on top and buys nothing a real file could use.
const MaxFileSize int64 = 1 << 50

// CheckRange checks n bytes at off against the file size limit: both
// must be non-negative (ErrInvalidArgument) and off+n at most
// MaxFileSize (ErrTooLarge). The comparison cannot overflow.
func CheckRange(off, n int64) error {
	switch {
	case off < 0:
		return fmt.Errorf("%w: negative offset %d", ErrInvalidArgument, off)
	case n < 0:
		return fmt.Errorf("%w: negative length %d", ErrInvalidArgument, n)
	case off > MaxFileSize || n > MaxFileSize-off:
		return fmt.Errorf("%w: %d bytes at offset %d end past the largest file size, %d bytes", ErrTooLarge, n, off, MaxFileSize)
	}
	return nil
}
