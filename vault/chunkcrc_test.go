package vault

import (
	"encoding/binary"
	"hash/crc32"
	"testing"
)

// The bound checksum (format 2) costs a 24-byte header on top of the
// data's CRC, and must not allocate: every read computes it.

func TestChunkCRCBindsPlace(t *testing.T) {
	data := genBytes(1, 4096)
	base := chunkCRC(2, 5, 7, data)
	if base == crc32.Checksum(data, castagnoli) {
		t.Fatal("the format 2 checksum equals the data's plain CRC")
	}
	for _, c := range []struct {
		ino, idx int64
		data     []byte
	}{{6, 7, data}, {5, 8, data}, {5, 7, data[:4095]}, {7, 5, data}} {
		if chunkCRC(2, c.ino, c.idx, c.data) == base {
			t.Errorf("chunkCRC(%d, %d, %d bytes) equals that of (5, 7, 4096)", c.ino, c.idx, len(c.data))
		}
	}
	// It is the CRC-32C of the little-endian header followed by the data.
	hdr := binary.LittleEndian.AppendUint64(nil, 5)
	hdr = binary.LittleEndian.AppendUint64(hdr, 7)
	hdr = binary.LittleEndian.AppendUint64(hdr, 4096)
	if want := crc32.Checksum(append(hdr, data...), castagnoli); base != want {
		t.Errorf("chunkCRC = %#x, want the CRC of header and data %#x", base, want)
	}
	if chunkCRC(1, 5, 7, data) != crc32.Checksum(data, castagnoli) {
		t.Error("the format 1 checksum is not the data's CRC-32C")
	}
}

func TestChunkCRCAllocatesNothing(t *testing.T) {
	data := genBytes(2, 64<<10)
	var sink uint32
	crc := chunkCRC(2, 123, 456, data)
	if n := testing.AllocsPerRun(100, func() { sink += chunkCRC(2, 123, 456, data) }); n != 0 {
		t.Errorf("chunkCRC allocates %.1f times per call", n)
	}
	if n := testing.AllocsPerRun(100, func() {
		if checkChunk(2, 123, 456, int64(len(data)), crc, 64<<10, 1<<40, data) == "" {
			sink++
		}
	}); n != 0 {
		t.Errorf("checkChunk of a good chunk allocates %.1f times per call", n)
	}
}

// BenchmarkChunkCRC compares the format 1 (data only) and format 2
// (header and data) checksums of one chunk of the default size.
func BenchmarkChunkCRC(b *testing.B) {
	data := genBytes(3, DefaultChunkSize)
	for _, format := range []int64{1, 2} {
		b.Run(map[int64]string{1: "format1", 2: "format2"}[format], func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			var sink uint32
			for b.Loop() {
				sink += chunkCRC(format, 123, 456, data)
			}
			_ = sink
		})
	}
}
