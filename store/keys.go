package store

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// The mapping from keys to paths, the same for every store: a key that is
// a valid relative path ("photos/2024/a.jpg") is the file at that path, its
// components directories; any other key (one with a NUL byte, an empty,
// "." or ".." component, a component over MaxNameLen, or a first
// component equal to ReservedDir) is the file named BinaryName(key) under
// ReservedDir/keys.

// MaxNameLen is the longest path component a key may have and still live
// in the tree (Linux's NAME_MAX).
const MaxNameLen = 255

// ReservedDir is the root entry that holds the store's own directories;
// keys that are not paths appear in the mount under ReservedDir/keys.
const ReservedDir = ".kvault"

// KeysDir is the directory under ReservedDir that holds the keys that are
// not paths.
const KeysDir = "keys"

// PathParts splits a path key into its components, or reports false if
// the key cannot be a path in the tree.
func PathParts(key string) ([]string, bool) {
	if key == "" || strings.IndexByte(key, 0) >= 0 {
		return nil, false
	}
	parts := strings.Split(key, "/")
	for _, p := range parts {
		if p == "" || p == "." || p == ".." || len(p) > MaxNameLen {
			return nil, false
		}
	}
	if parts[0] == ReservedDir {
		return nil, false
	}
	return parts, true
}

// IsPathKey reports whether key is shown at its own path, rather than
// under /.kvault/keys/.
func IsPathKey(key string) bool {
	_, ok := PathParts(key)
	return ok
}

// BinaryName is the file name of a key that is not a path, in the
// reserved keys directory: the hex SHA-256 of the key, so any key gets a
// short, valid, collision-free name.
func BinaryName(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// ValidName checks one directory entry name given by the mount or by a
// tree operation.
func ValidName(name string) error {
	switch {
	case name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("%w: bad file name %q", ErrInvalidArgument, name)
	case len(name) > MaxNameLen:
		return fmt.Errorf("%w: %d bytes", ErrNameTooLong, len(name))
	}
	return nil
}
