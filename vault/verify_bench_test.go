package vault

import (
	"fmt"
	"testing"
)

// BenchmarkVerify verifies a vault of 20,000 small files (one chunk each)
// in 100 directories: the tree checks cost a few queries per inode and
// entry on top of reading every chunk.
func BenchmarkVerify(b *testing.B) {
	v := openTest(b, nil)
	v.EnableCache(256<<20, 64<<20)
	for i := range 20000 {
		mustPut(b, v, fmt.Sprintf("d%03d/f%05d", i%100, i), genBytes(uint64(i), 1000))
	}
	if err := v.DisableCache(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		n := 0
		checked, err := v.Verify(func(Damage) { n++ })
		if err != nil || n != 0 || checked != 20000 {
			b.Fatalf("Verify = %d checked, %d problems, %v", checked, n, err)
		}
	}
}
