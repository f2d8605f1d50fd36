// Package kohakufixtures describes the content of the KohakuVault fixture
// files under kohaku/testdata: which KV tables each file holds and every key
// and value in them. scripts/mkkohaku writes the files and their manifest
// from it; tests compare what they read against the manifest.
package kohakufixtures

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
)

// Format names as they appear in the manifest.
const (
	FormatA  = "A"
	FormatBC = "B/C"
)

// Entry is one stored key and value, as bytes.
type Entry struct {
	Key   []byte
	Value []byte
}

// Table is one KohakuVault KV table of a fixture file.
type Table struct {
	Name   string
	Format string // FormatA or FormatBC
	// Line is the KohakuVault line that created the table: "A"
	// (v0.1-v0.5), "B" (v0.6) or "C" (v0.7+, which creates
	// kohakuvault_meta before the table).
	Line    string
	Entries []Entry
}

// File is one fixture file.
type File struct {
	Name string
	// KV lists the file's KohakuVault KV tables.
	KV []Table
	// Tables lists every table of the file (sqlite_schema, type 'table',
	// without sqlite_* internals), sorted, as a survey must report them.
	Tables []string
}

// BigValueSize is the size of the large value: 768 copies of one 4 KiB
// pseudo-random block, big enough to span many overflow pages and
// compressible enough to commit.
const BigValueSize = 768 * 4096

// Header-encoded values exactly as KohakuVault 0.7+ stores them (spec 5.2).
var (
	HeaderStr  = mustHex("894B010600000000564B" + "68C3A96C6C6F2077C3B6726C64") // "héllo wörld"
	HeaderInt  = mustHex("894B010200000000564B" + "2A00000000000000")           // 42
	HeaderDict = mustHex("894B010400000000564B" + "81A16101")                   // {"a": 1}
	// RawMagic is a raw bytes value that starts with the header magic but is
	// no header (bytes 8-9 are not 56 4B): KohakuVault stores it raw from
	// put(bytes) and its 0.7+ reader then fails on it.
	RawMagic = mustHex("894B" + "0011223344556677" + "8899AABBCCDDEEFF")
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// BigValue returns the deterministic large value.
func BigValue() []byte {
	r := rand.New(rand.NewPCG(9, 2026))
	block := make([]byte, 4096)
	for i := range block {
		block[i] = byte(r.Uint32())
	}
	return bytes.Repeat(block, BigValueSize/len(block))
}

// commonEntries are the keys every full KV table holds: the empty key, a
// non-UTF-8 key, path keys, keys that are not paths, an empty value, the
// large value and a raw value starting with the header magic.
func commonEntries() []Entry {
	return []Entry{
		{Key: []byte{}, Value: []byte("value of the empty key")},
		{Key: []byte{0xff, 0xfe, 0x00, 0x01}, Value: []byte("value of a key that is not UTF-8")},
		{Key: []byte("photos/2024/a.jpg"), Value: append([]byte{0xff, 0xd8, 0xff, 0xe0}, []byte("not really a jpeg, a")...)},
		{Key: []byte("photos/2024/b.jpg"), Value: append([]byte{0xff, 0xd8, 0xff, 0xe0}, []byte("not really a jpeg, b")...)},
		{Key: []byte("videos/clip.mp4"), Value: BigValue()},
		{Key: []byte("top.txt"), Value: []byte("a file at the top\n")},
		{Key: []byte("a//b"), Value: []byte("a key with an empty path segment")},
		{Key: []byte("../x"), Value: []byte("a key that climbs")},
		{Key: []byte("with\x00nul"), Value: []byte("a key holding a NUL byte")},
		{Key: []byte("empty.bin"), Value: []byte{}},
		{Key: []byte("raw/magic.bin"), Value: RawMagic},
	}
}

// headerEntries are values KohakuVault 0.7+ encoded with its header.
func headerEntries() []Entry {
	return []Entry{
		{Key: []byte("enc/str"), Value: HeaderStr},
		{Key: []byte("enc/int"), Value: HeaderInt},
		{Key: []byte("enc/dict"), Value: HeaderDict},
	}
}

// smallEntries are the keys of the secondary tables (several.db, named.db).
func smallEntries(tag string) []Entry {
	return []Entry{
		{Key: []byte(tag + "/one.txt"), Value: []byte("one of " + tag + "\n")},
		{Key: []byte("two.txt"), Value: []byte("two of " + tag + "\n")},
		{Key: []byte{}, Value: []byte{}},
	}
}

// Files returns every fixture file and its content, in build order.
func Files() []File {
	full := commonEntries()
	withHeaders := append(commonEntries(), headerEntries()...)
	return []File{
		{Name: "format-a.db", KV: []Table{{Name: "kv", Format: FormatA, Line: "A", Entries: full}},
			Tables: []string{"kv"}},
		{Name: "format-b.db", KV: []Table{{Name: "kv", Format: FormatBC, Line: "B", Entries: withHeaders}},
			Tables: []string{"kv"}},
		{Name: "format-c.db", KV: []Table{{Name: "kv", Format: FormatBC, Line: "C", Entries: withHeaders}},
			Tables: []string{"col_chunks", "col_meta", "kohakuvault_meta", "kv", "text_vault",
				"text_vault_config", "text_vault_content", "text_vault_data", "text_vault_docsize",
				"text_vault_idx", "text_vault_values"}},
		{Name: "several.db", KV: []Table{
			{Name: "images", Format: FormatA, Line: "A", Entries: smallEntries("images")},
			{Name: "kv", Format: FormatBC, Line: "C", Entries: append(smallEntries("kv"), headerEntries()...)},
		}, Tables: []string{"images", "kohakuvault_meta", "kv"}},
		{Name: "foreign.db", Tables: []string{"orders", "sessions", "users"}},
		{Name: "named.db", KV: []Table{{Name: "kvault", Format: FormatBC, Line: "C", Entries: append(smallEntries("kvault"), headerEntries()...)}},
			Tables: []string{"kohakuvault_meta", "kvault"}},
	}
}

// ManifestEntry describes one stored key and value in manifest.json.
type ManifestEntry struct {
	KeyHex string `json:"key_hex"`
	Len    int    `json:"len"`
	SHA256 string `json:"sha256"`
}

// ManifestTable describes one KV table in manifest.json.
type ManifestTable struct {
	Name    string          `json:"name"`
	Format  string          `json:"format"`
	Entries []ManifestEntry `json:"entries"`
}

// ManifestFile describes one fixture file in manifest.json.
type ManifestFile struct {
	Name   string          `json:"name"`
	Tables []string        `json:"tables"`
	KV     []ManifestTable `json:"kv"`
}

// Manifest is the content of kohaku/testdata/manifest.json.
type Manifest struct {
	Files []ManifestFile `json:"files"`
}

// Describe returns the manifest entry of one key and value.
func Describe(e Entry) ManifestEntry {
	sum := sha256.Sum256(e.Value)
	return ManifestEntry{KeyHex: hex.EncodeToString(e.Key), Len: len(e.Value), SHA256: hex.EncodeToString(sum[:])}
}

// BuildManifest describes every fixture of Files.
func BuildManifest() Manifest {
	var m Manifest
	for _, f := range Files() {
		mf := ManifestFile{Name: f.Name, Tables: f.Tables, KV: []ManifestTable{}}
		for _, t := range f.KV {
			mt := ManifestTable{Name: t.Name, Format: t.Format, Entries: []ManifestEntry{}}
			for _, e := range t.Entries {
				mt.Entries = append(mt.Entries, Describe(e))
			}
			mf.KV = append(mf.KV, mt)
		}
		m.Files = append(m.Files, mf)
	}
	return m
}
