package postgres

import (
	"crypto/tls"
	"encoding/binary"
	"net"
	"sync/atomic"

	"github.com/leproxy/leproxy/dbproxy"
)

// terminateWatch is the client side of a session after startup: it
// follows the client's message framing to see a Terminate ('X'), so that
// the session-end line says the client quit even when the backend's close
// (its answer to Terminate) reaches leproxy before the client's own. Only
// TLS clients are watched: a plaintext client's TCP connection stays
// unwrapped, for splice.
//
// The framing is followed from the first byte after ReadyForQuery; a
// client that pipelined a message across that point throws it off, and
// then only the closed_by of its session-end line may be wrong.
type terminateWatch struct {
	net.Conn
	hdr  [5]byte // the current message's type and length
	nhdr int     // bytes of hdr read
	left int64   // body bytes of the current message still to come
	quit atomic.Bool
}

var _ dbproxy.EndReporter = (*terminateWatch)(nil)

// watchTerminate wraps a TLS client connection; others are returned as
// they are.
func watchTerminate(c net.Conn) net.Conn {
	if _, ok := c.(*tls.Conn); !ok {
		return c
	}
	return &terminateWatch{Conn: c}
}

func (w *terminateWatch) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	w.scan(p[:n])
	return n, err
}

// scan follows the framing through b: a type byte, a length that counts
// itself, the body.
func (w *terminateWatch) scan(b []byte) {
	for len(b) > 0 {
		if w.left > 0 {
			k := min(int64(len(b)), w.left)
			w.left -= k
			b = b[k:]
			continue
		}
		k := copy(w.hdr[w.nhdr:], b)
		w.nhdr += k
		b = b[k:]
		if w.nhdr < len(w.hdr) {
			return
		}
		w.nhdr = 0
		if w.hdr[0] == 'X' {
			w.quit.Store(true)
		}
		// A length under 4 is the backend's to refuse; skip nothing.
		w.left = max(int64(binary.BigEndian.Uint32(w.hdr[1:]))-4, 0)
	}
}

// SessionEnd implements dbproxy.EndReporter.
func (w *terminateWatch) SessionEnd() (dbproxy.End, bool) {
	if w.quit.Load() {
		return dbproxy.End{By: dbproxy.ByClient, Reason: dbproxy.ReasonClosed}, true
	}
	return dbproxy.End{}, false
}

// CloseWrite half-closes the connection underneath, for the pump.
func (w *terminateWatch) CloseWrite() error { return dbproxy.CloseWrite(w.Conn) }

// NetConn is the TLS connection underneath.
func (w *terminateWatch) NetConn() net.Conn { return w.Conn }
