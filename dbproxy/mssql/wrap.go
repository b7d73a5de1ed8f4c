package mssql

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
)

// maxFlight bounds the TLS handshake bytes one side may queue before the
// other answers: a flight with a long certificate chain is a few KiB.
const maxFlight = 64 << 10

// A wrapConn is the connection under crypto/tls for TDS 7.x: during the
// handshake it carries TLS records as the payload of PRELOGIN packets
// (MS-TDS 3.2.5.2, 3.3.5.2), then, after finish, the raw TLS records of
// the session. It reads packets exactly, never past the current one, and
// sends what crypto/tls writes of a flight as one message (PRELOGIN
// packets of at most size bytes, EOM on the last) when it next reads or
// finishes: peers read a message to its EOM as one flight.
type wrapConn struct {
	net.Conn
	wrapped bool
	// acceptReply lets the peer wrap its records in reply packets (0x04)
	// as well as PRELOGIN ones: older SQL Servers do (go-mssqldb's
	// "Older endpoints send back header type 4 instead of 18").
	acceptReply bool
	size        int    // of the packets written
	remain      int    // payload bytes left of the packet being read
	pending     []byte // records of the flight being written
}

func newWrapConn(c net.Conn, acceptReply bool, size int) *wrapConn {
	return &wrapConn{Conn: c, wrapped: true, acceptReply: acceptReply, size: size}
}

func (c *wrapConn) Read(p []byte) (int, error) {
	if !c.wrapped {
		return c.Conn.Read(p)
	}
	if err := c.flush(); err != nil {
		return 0, err
	}
	for c.remain == 0 {
		var hdr [headerLen]byte
		if _, err := io.ReadFull(c.Conn, hdr[:]); err != nil {
			return 0, fmt.Errorf("reading a TLS handshake packet: %w", err)
		}
		if hdr[0] != pktPrelogin && !(c.acceptReply && hdr[0] == pktReply) {
			return 0, malformed("packet of type 0x%02x during the TLS handshake, want PRELOGIN (0x12)", hdr[0])
		}
		n := int(binary.BigEndian.Uint16(hdr[2:4]))
		if n < headerLen {
			return 0, malformed("packet length %d is shorter than its header", n)
		}
		c.remain = n - headerLen
	}
	n, err := c.Conn.Read(p[:min(len(p), c.remain)])
	c.remain -= n
	return n, noEOF(err)
}

func (c *wrapConn) Write(p []byte) (int, error) {
	if !c.wrapped {
		return c.Conn.Write(p)
	}
	if len(c.pending)+len(p) > maxFlight {
		return 0, fmt.Errorf("TLS handshake flight longer than %d bytes", maxFlight)
	}
	c.pending = append(c.pending, p...)
	return len(p), nil
}

// flush sends the records written since the last read as one message.
func (c *wrapConn) flush() error {
	if len(c.pending) == 0 {
		return nil
	}
	out := appendPackets(nil, pktPrelogin, c.pending, c.size)
	c.pending = c.pending[:0]
	if _, err := c.Conn.Write(out); err != nil {
		return fmt.Errorf("writing a TLS handshake packet: %w", err)
	}
	return nil
}

// finish sends what the handshake left to send and switches to raw TLS
// records. Bytes left in the last handshake packet are a protocol
// violation: nothing but the handshake may travel in those packets.
func (c *wrapConn) finish() error {
	if err := c.flush(); err != nil {
		return err
	}
	c.wrapped = false
	if c.remain != 0 {
		return malformed("%d bytes after the TLS handshake in its PRELOGIN packet", c.remain)
	}
	return nil
}

// CloseWrite half-closes the connection underneath, so the pump's
// half-close reaches TCP under the TLS connection.
func (c *wrapConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// NetConn is the connection underneath.
func (c *wrapConn) NetConn() net.Conn { return c.Conn }
