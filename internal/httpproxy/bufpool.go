package httpproxy

import (
	"net/http/httputil"
	"sync"
)

// bufSize is the size of the buffers ReverseProxy copies response bodies
// through; it matches the buffer io.Copy and ReverseProxy would allocate.
const bufSize = 32 << 10

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
