package cassandra

import (
	"errors"
	"io"
)

// frameReader buffers a connection's bytes for a framer. A read that
// fails (the pump's sampling deadline, or the end) keeps what it got, so
// that a framer that starts its frame over after a transient error finds
// every byte again: need never consumes, discard does.
type frameReader struct {
	r   io.Reader
	buf []byte // buf[off:] is unconsumed
	off int
}

// minRead is the least room a read into the buffer gets.
const minRead = 16 << 10

// need makes sure n unconsumed bytes are buffered. It fails with r's error
// when they do not come; io.ErrUnexpectedEOF for an end inside them, and
// io.EOF only for an end before the first.
func (f *frameReader) need(n int) error {
	for len(f.buf)-f.off < n {
		have := len(f.buf) - f.off
		if cap(f.buf)-len(f.buf) < max(n-have, minRead) {
			size := max(n, have+minRead, 2*have)
			nb := make([]byte, have, size)
			copy(nb, f.buf[f.off:])
			f.buf, f.off = nb, 0
		}
		k, err := f.r.Read(f.buf[len(f.buf):cap(f.buf)])
		f.buf = f.buf[:len(f.buf)+k]
		if err != nil && len(f.buf)-f.off < n {
			if errors.Is(err, io.EOF) && len(f.buf)-f.off > 0 {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// peek returns the first n unconsumed bytes, which need(n) buffered. They
// stay valid until the next need.
func (f *frameReader) peek(n int) []byte { return f.buf[f.off : f.off+n] }

// discard consumes n bytes, which need(n) buffered.
func (f *frameReader) discard(n int) {
	f.off += n
	if f.off == len(f.buf) {
		f.off = 0
		f.buf = f.buf[:0]
		if cap(f.buf) > 1<<20 {
			f.buf = nil // a big frame passed: let its buffer go
		}
	}
}

// readSome reads up to len(p) bytes: buffered ones first, else straight
// from the connection.
func (f *frameReader) readSome(p []byte) (int, error) {
	if have := len(f.buf) - f.off; have > 0 {
		n := copy(p, f.buf[f.off:])
		f.discard(n)
		return n, nil
	}
	return f.r.Read(p)
}
