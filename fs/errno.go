package fs

import (
	"errors"
	"io/fs"
	"syscall"

	"github.com/kohakuvault/kvaultfs/vault"
)

// errnoMap translates vault errors to errno values, most specific first:
// ErrNotDir and ErrIsDir are also ErrInvalidArgument, so order matters.
var errnoMap = []struct {
	err   error
	errno syscall.Errno
}{
	{vault.ErrNotFound, syscall.ENOENT},
	{vault.ErrExists, syscall.EEXIST},
	{vault.ErrNotEmpty, syscall.ENOTEMPTY},
	{vault.ErrNotDir, syscall.ENOTDIR},
	{vault.ErrIsDir, syscall.EISDIR},
	{vault.ErrNameTooLong, syscall.ENAMETOOLONG},
	{vault.ErrTooLarge, syscall.EFBIG},
	{vault.ErrPermission, syscall.EPERM},
	{vault.ErrReadOnly, syscall.EROFS},
	{vault.ErrNoSpace, syscall.ENOSPC},
	{vault.ErrBusy, syscall.EBUSY},
	{vault.ErrCorrupt, syscall.EIO},
	{vault.ErrChanged, syscall.ESTALE},
	{vault.ErrClosed, syscall.EBADF},
	{vault.ErrInvalidArgument, syscall.EINVAL},
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
