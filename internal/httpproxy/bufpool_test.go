package httpproxy

import "testing"

func TestBufPool(t *testing.T) {
	var p bufPool
	for _, tc := range []struct {
		name string
		put  []byte
	}{
		{"foreign small buffer", make([]byte, 10)},
		{"foreign large buffer", make([]byte, 2*bufSize)},
		{"own buffer resliced", p.Get()[:10]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p.Put(tc.put)
			for range 3 {
				if got := len(p.Get()); got != bufSize {
					t.Fatalf("got buffer of %d bytes, want %d", got, bufSize)
				}
			}
		})
	}
}

func BenchmarkBufPool(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		sharedBufPool.Put(sharedBufPool.Get())
	}
}
