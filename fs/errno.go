package fs

import (
	"errors"
	"io/fs"
	"syscall"

	"github.com/kohakuvault/kvaultfs/store"
)

// errnoMap translates vault errors to errno values, most specific first:
// ErrNotDir and ErrIsDir are also ErrInvalidArgument, so order matters.
var errnoMap = []struct {
	err   error
	errno syscall.Errno
}{
	{store.ErrNotFound, syscall.ENOENT},
	{store.ErrExists, syscall.EEXIST},
	{store.ErrNotEmpty, syscall.ENOTEMPTY},
	{store.ErrNotDir, syscall.ENOTDIR},
	{store.ErrIsDir, syscall.EISDIR},
	{store.ErrNameTooLong, syscall.ENAMETOOLONG},
	{store.ErrTooLarge, syscall.EFBIG},
	{store.ErrPermission, syscall.EPERM},
	{store.ErrNotSupported, syscall.EOPNOTSUPP},
	{store.ErrReadOnly, syscall.EROFS},
	{store.ErrNoSpace, syscall.ENOSPC},
	{store.ErrBusy, syscall.EBUSY},
	{store.ErrCorrupt, syscall.EIO},
	{store.ErrChanged, syscall.ESTALE},
	{store.ErrClosed, syscall.EBADF},
	{store.ErrInvalidArgument, syscall.EINVAL},
}

// toErrno maps an error from the vault to the errno the caller sees.
// Anything unrecognized is EIO, never success.
func toErrno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	for _, m := range errnoMap {
		if errors.Is(err, m.err) {
			return m.errno
		}
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	if errors.Is(err, fs.ErrNotExist) {
		return syscall.ENOENT
	}
	return syscall.EIO
}
