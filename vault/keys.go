package vault

import (
	"slices"
	"strings"

	"github.com/kohakuvault/kvaultfs/store"
)

// MaxNameLen is the longest path component a key may have and still live
// in the tree (Linux's NAME_MAX).
const MaxNameLen = store.MaxNameLen

// ReservedDir is the root entry that holds the vault's own directories;
// keys that are not paths appear in the mount under ReservedDir/keys.
const ReservedDir = store.ReservedDir

// keyPath is a key resolved to where it lives: the tree path components
// of a key that is a valid path, or the name under the binary-keys
// directory of any other key.
type keyPath struct {
	key    string
	parts  []string // tree components; nil for a binary key
	binary bool
}

// parseKey classifies key. Keys that are valid relative paths live in the
// tree; every other key (the empty key, one with a NUL byte, an empty,
// "." or ".." component, a component over MaxNameLen, or a first
// component equal to ReservedDir) is kept whole in the binary-keys table.
// The empty key is a key like any other, as in KohakuVault.
func parseKey(key string) (keyPath, error) {
	if parts, ok := treeParts(key); ok {
		return keyPath{key: key, parts: parts}, nil
	}
	return keyPath{key: key, binary: true}, nil
}

// treeParts splits a path key into its components, or reports false if the
// key cannot be a path in the tree (see store.PathParts).
func treeParts(key string) ([]string, bool) { return store.PathParts(key) }

// binaryName is the file name of a binary key in the reserved keys
// directory (see store.BinaryName).
func binaryName(key string) string { return store.BinaryName(key) }

// IsPathKey reports whether key is stored in the tree, where the mount
// shows it at its own path, rather than under /.kvault/keys/.
func IsPathKey(key string) bool { return store.IsPathKey(key) }

// validName checks one directory entry name given by the mount or by a
// tree operation.
func validName(name string) error { return store.ValidName(name) }

// joinParts joins path components into a key.
func joinParts(parts []string) string { return strings.Join(parts, "/") }

// compareKeys orders keys as listings return them: path keys first,
// component by component (so "a/b" sorts with "a", before "a.txt"), then
// binary keys by their bytes.
func compareKeys(a, b string) int {
	pa, aok := treeParts(a)
	pb, bok := treeParts(b)
	switch {
	case aok && bok:
		return slices.Compare(pa, pb)
	case aok:
		return -1
	case bok:
		return 1
	}
	return strings.Compare(a, b)
}
