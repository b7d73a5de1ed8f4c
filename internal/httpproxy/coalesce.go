package httpproxy

import (
	"bufio"
	"net"
	"net/http"
	"sync"
)

// A proxied response leaves net/http in several writes to the connection:
// its 4 KiB connection buffer fills with the head and the start of the
// body and is written, then ReverseProxy's flush after each copy writes
// the rest. On the HTTPS listener each write is a TLS record and a system
// call, the dearest part of a small request. So while a handler writes a
// response body on an HTTP/1.x connection of NewTLSListener, the
// connection holds net/http's writes (up to maxHeldWrite bytes) and sends
// them as one record at the handler's next flush, or when it returns. The
// bytes and their order are the same; a flush still puts everything
// written on the wire before it returns.

// maxHeldWrite is the most a connection holds: one full TLS record.
const maxHeldWrite = 16 << 10

var heldPool = sync.Pool{New: func() any {
	b := make([]byte, 0, maxHeldWrite)
	return &b
}}

// writeHold is the held writes of one h1Conn. Its methods are called by
// the goroutine serving the connection's request; the lock covers a write
// net/http may make from another (a 100 Continue before the response).
type writeHold struct {
	mu      sync.Mutex
	holding bool
	held    *[]byte // from heldPool while holding and non-empty
	err     error   // the write error that ended the connection
}

func (c *h1Conn) Write(p []byte) (int, error) {
	h := &c.hold
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err != nil {
		return 0, h.err
	}
	if !h.holding {
		return c.Conn.Write(p)
	}
	if h.held != nil && len(*h.held)+len(p) > maxHeldWrite {
		if err := c.sendHeldLocked(); err != nil {
			return 0, err
		}
	}
	if len(p) > maxHeldWrite {
		return c.Conn.Write(p)
	}
	if h.held == nil {
		h.held = heldPool.Get().(*[]byte)
	}
	*h.held = append(*h.held, p...)
	return len(p), nil
}

// sendHeldLocked writes what c holds in one TLS write. c.hold.mu is held.
func (c *h1Conn) sendHeldLocked() error {
	h := &c.hold
	if h.held == nil {
		return nil
	}
	_, err := c.Conn.Write(*h.held)
	*h.held = (*h.held)[:0]
	heldPool.Put(h.held)
	h.held = nil
	if err != nil {
		h.err = err
	}
	return err
}

// holdWrites starts holding c's writes.
func (c *h1Conn) holdWrites() {
	c.hold.mu.Lock()
	c.hold.holding = true
	c.hold.mu.Unlock()
}

// sendHeld writes what c holds, and stops holding if stop.
func (c *h1Conn) sendHeld(stop bool) error {
	c.hold.mu.Lock()
	defer c.hold.mu.Unlock()
	if stop {
		c.hold.holding = false
	}
	return c.sendHeldLocked()
}

// coalescingWriter is the ResponseWriter ServeHTTP hands a route on an
// h1Conn: from the response's final status on (when net/http has sent or
// given up a 100 Continue) to the handler's return, the connection holds
// its writes, and each flush sends them. Its Flush, Hijack and Unwrap keep
// what ReverseProxy and http.ResponseController need. ReverseProxy may
// flush from a timer goroutine; it serialises that with its writes.
type coalescingWriter struct {
	http.ResponseWriter
	c       *h1Conn
	holding bool
	done    bool // hijacked or returned: no more holding
}

var (
	_ http.Flusher  = (*coalescingWriter)(nil)
	_ http.Hijacker = (*coalescingWriter)(nil)
)

// coalesce returns the ResponseWriter to serve r with: w itself, or on an
// h1Conn a coalescingWriter over it. Call end once the handler returns.
func coalesce(w http.ResponseWriter, r *http.Request) (_ http.ResponseWriter, end func()) {
	g, _ := r.Context().Value(connGuardKey{}).(*connGuard)
	if g == nil || g.h1 == nil || r.ProtoMajor != 1 {
		return w, func() {}
	}
	cw := &coalescingWriter{ResponseWriter: w, c: g.h1}
	return cw, cw.end
}

// WriteHeader starts holding at a final status: net/http sends no 100
// Continue after one. An informational status goes out at once, and 101
// hands the connection over.
func (w *coalescingWriter) WriteHeader(code int) {
	w.ResponseWriter.WriteHeader(code)
	if code >= 200 {
		w.startHolding()
	}
}

func (w *coalescingWriter) Write(p []byte) (int, error) {
	if !w.holding {
		// An empty write commits the head (200 unless WriteHeader said
		// otherwise) and stops net/http's 100 Continue, as the first
		// write would.
		if _, err := w.ResponseWriter.Write(nil); err != nil {
			return 0, err
		}
		w.startHolding()
	}
	return w.ResponseWriter.Write(p)
}

func (w *coalescingWriter) startHolding() {
	if !w.holding && !w.done {
		w.holding = true
		w.c.holdWrites()
	}
}

// Flush implements http.Flusher; FlushError returns its error.
func (w *coalescingWriter) Flush() { _ = w.FlushError() }

// FlushError flushes net/http's buffers, then sends what the connection
// holds.
func (w *coalescingWriter) FlushError() error {
	err := http.NewResponseController(w.ResponseWriter).Flush()
	if w.holding {
		if serr := w.c.sendHeld(false); err == nil {
			err = serr
		}
	}
	return err
}

// Hijack sends what is held and hands over the connection.
func (w *coalescingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.end()
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// Unwrap returns the wrapped ResponseWriter, for
// http.ResponseController.
func (w *coalescingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// end sends what is held and stops holding; ServeHTTP calls it when the
// handler returns, before net/http writes the end of the response.
func (w *coalescingWriter) end() {
	w.done = true
	if w.holding {
		w.holding = false
		_ = w.c.sendHeld(true) // the error stays on the connection for net/http's next write
	}
}
