package httpproxy

import (
	"net/http/httputil"
	"sync"
)

// bufSize is the size of the buffers ReverseProxy copies response bodies
// through: one TLS record's worth, since ReverseProxy flushes after each
// read anyway. Each response in flight holds one, so under 512 HTTP/2
// streams the 32 KiB io.Copy would use made 16 MiB of a 60 MiB peak.
const bufSize = 16 << 10

// bufPool is an httputil.BufferPool of bufSize byte slices. A single
// package-level pool, sharedBufPool, serves every Handler, so a Handler
// built by a configuration reload reuses the buffers of the one it replaces.
type bufPool struct{ p sync.Pool }

var _ httputil.BufferPool = (*bufPool)(nil)

// sharedBufPool is the one buffer pool of every Handler's reverse proxies.
var sharedBufPool = &bufPool{}

// Get returns a bufSize byte slice, reused when one is free.
func (bp *bufPool) Get() []byte {
	if b, ok := bp.p.Get().(*[]byte); ok {
		return *b
	}
	return make([]byte, bufSize)
}

// Put returns b to the pool. Slices of another capacity than bufSize are
// dropped so that Get always hands out bufSize bytes.
func (bp *bufPool) Put(b []byte) {
	if cap(b) != bufSize {
		return
	}
	b = b[:bufSize]
	bp.p.Put(&b)
}
