package cassandra

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
)

// After STARTUP the session's frames are piped through two framers, one
// each way, which hand the pump whole frames (or, for a large frame that
// needs no rewriting, its header and then the rest as it comes):
//
//   - client to backend: every frame is read whole, bounded by the
//     listener's MaxFrame; QUERY and EXECUTE lose their skip_metadata
//     flag, so that every row set carries the metadata that says which
//     table it comes from. A frame leproxy cannot read (compressed, of
//     another protocol version, too large) is refused with a protocol
//     ERROR on its stream and the session ends.
//   - backend to client: RESULT rows of system.local, system.peers and
//     system.peers_v2 and topology and status EVENTs are rewritten
//     (rewrite.go), SUPPORTED loses COMPRESSION; any other frame passes
//     unread.

// inspectLen is how much of a RESULT body is read to tell whether it is
// a system table's rows before the rest is streamed.
const inspectLen = 64 << 10

// fault is a client's protocol violation seen by the client framer, to
// be told by the backend framer at a frame boundary: the only writer to
// the client once the pump runs.
type fault struct {
	mu    sync.Mutex
	frame []byte
	err   error
}

func (f *fault) set(frame []byte, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.frame, f.err = frame, err
	}
}

func (f *fault) get() ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.frame, f.err
}

// clientConn is the client side of a session after STARTUP.
type clientConn struct {
	net.Conn
	fr      frameReader
	proto   byte
	max     uint32
	fault   *fault
	backend net.Conn // to wake the backend framer on a fault
	out     []byte
	err     error // sticky
}

func (c *clientConn) Read(p []byte) (int, error) {
	for len(c.out) == 0 {
		if c.err != nil {
			return 0, c.err
		}
		if err := c.next(); err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				c.err = err
			}
			return 0, err
		}
	}
	n := copy(p, c.out)
	c.out = c.out[n:]
	return n, nil
}

// next takes the client's next frame into c.out.
func (c *clientConn) next() error {
	if err := c.fr.need(headerLen); err != nil {
		return err
	}
	h := parseHeader(c.fr.peek(headerLen))
	if h.length > c.max {
		return c.refuse(h, fmt.Sprintf("frame of %d bytes exceeds leproxy's limit of %d", h.length, c.max),
			fmt.Errorf("%w: body of %d bytes exceeds the limit of %d", errFrameTooLarge, h.length, c.max))
	}
	switch {
	case h.proto() != c.proto || h.version&responseBit != 0:
		return c.refuse(h, fmt.Sprintf("frame of protocol version %#02x after STARTUP of version %d", h.version, c.proto), errors.New("protocol version changed"))
	case h.flags&flagCompression != 0:
		return c.refuse(h, "compressed frame: leproxy does not offer compression", errors.New("compressed frame"))
	case h.opcode == opStartup:
		return c.refuse(h, "STARTUP after STARTUP", errors.New("repeated STARTUP"))
	}
	n := headerLen + int(h.length)
	if err := c.fr.need(n); err != nil {
		return err
	}
	frame := c.fr.peek(n)
	if h.opcode == opQuery || h.opcode == opExecute {
		clearSkipMetadata(h, frame[headerLen:])
	}
	c.fr.discard(n)
	c.out = frame
	return nil
}

// refuse records a violation for the backend framer to tell the client
// with a protocol ERROR, wakes it, and returns the error that ends the
// client's direction.
func (c *clientConn) refuse(h header, msg string, err error) error {
	c.fault.set(errorFrame(c.proto, h.stream, errProtocol, msg), err)
	c.backend.SetReadDeadline(time.Now())
	return fmt.Errorf("client frame: %w", err)
}

// clearSkipMetadata clears the skip_metadata flag of a QUERY or EXECUTE
// body in place.
func clearSkipMetadata(h header, body []byte) {
	r := &reader{b: body}
	if h.flags&flagPayload != 0 {
		r.skipBytesMap()
	}
	if h.opcode == opQuery {
		r.longString()
	} else {
		r.take(r.short())
	}
	r.short() // consistency
	if r.err == nil && r.off < len(body) {
		body[r.off] &^= 0x02
	}
}

// CloseWrite half-closes the connection underneath, for the pump.
func (c *clientConn) CloseWrite() error { return dbproxy.CloseWrite(c.Conn) }

// backendConn is the backend side of a session after STARTUP: reads come
// out of the response framer.
type backendConn struct {
	net.Conn
	fr      frameReader
	proto   byte
	w       *rewriter
	max     uint32 // a response frame's body
	maxRows uint32 // a system table's rows, read whole
	fault   *fault
	out     []byte
	stream  int64 // bytes of the current frame's body to pass unread
	err     error // sticky
}

func (c *backendConn) Read(p []byte) (int, error) {
	for {
		if len(c.out) > 0 {
			n := copy(p, c.out)
			c.out = c.out[n:]
			return n, nil
		}
		if c.stream > 0 {
			n, err := c.fr.readSome(p[:min(int64(len(p)), c.stream)])
			c.stream -= int64(n)
			if n > 0 {
				return n, nil
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			if err != nil {
				return 0, c.failed(err)
			}
			continue
		}
		if c.err != nil {
			return 0, c.err
		}
		if f, err := c.fault.get(); err != nil {
			// The client broke the protocol: tell it, and end.
			c.out, c.err = f, io.EOF
			continue
		}
		if err := c.next(); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if _, ferr := c.fault.get(); ferr != nil {
					continue
				}
			}
			return 0, c.failed(err)
		}
	}
}

// failed records err unless it is the pump's transient deadline, and
// returns it.
func (c *backendConn) failed(err error) error {
	if !errors.Is(err, os.ErrDeadlineExceeded) && c.err == nil {
		c.err = err
	}
	return err
}

// next takes the next response frame, or its start, into c.out.
func (c *backendConn) next() error {
	if err := c.fr.need(headerLen); err != nil {
		return err
	}
	h := parseHeader(c.fr.peek(headerLen))
	if h.length > c.max {
		c.out = errorFrame(c.proto, h.stream, errServer, fmt.Sprintf("backend frame of %d bytes exceeds leproxy's limit of %d", h.length, c.max))
		c.err = fmt.Errorf("backend %w: body of %d bytes exceeds the limit of %d", errFrameTooLarge, h.length, c.max)
		return nil
	}
	if h.proto() != c.proto || h.version&responseBit == 0 {
		return fmt.Errorf("backend frame of protocol version %#02x in a session of version %d", h.version, c.proto)
	}
	switch h.opcode {
	case opResult:
		return c.result(h)
	case opEvent, opSupported:
		return c.small(h)
	}
	c.out = c.fr.peek(headerLen)
	c.fr.discard(headerLen)
	c.stream = int64(h.length)
	return nil
}

// result takes a RESULT: system table rows whole, to rewrite them;
// anything else passes after a look at its start.
func (c *backendConn) result(h header) error {
	n := headerLen + int(min(h.length, inspectLen))
	if err := c.fr.need(n); err != nil {
		return err
	}
	start := c.fr.peek(n)
	rh, err := parseRowsHead(h.flags, start[headerLen:])
	if errors.Is(err, errShort) && n < headerLen+int(h.length) {
		// Metadata over 64 KiB: a system table's is far smaller.
		rh, err = rowsHead{}, nil
	}
	if err != nil {
		return fmt.Errorf("reading backend RESULT: %w", err)
	}
	if rh.table == tableNone {
		c.out = start
		c.fr.discard(n)
		c.stream = int64(headerLen + int(h.length) - n)
		return nil
	}
	if h.length > c.maxRows {
		return fmt.Errorf("backend RESULT of a system table: %w: %d bytes exceeds the limit of %d", errFrameTooLarge, h.length, c.maxRows)
	}
	n = headerLen + int(h.length)
	if err := c.fr.need(n); err != nil {
		return err
	}
	frame := c.fr.peek(n)
	nb, err := c.w.rows(rh, frame[headerLen:])
	if err != nil {
		return err
	}
	c.fr.discard(n)
	c.out = appendFrame(nil, h, nb)
	return nil
}

// maxSmall bounds an EVENT or SUPPORTED body.
const maxSmall = 1 << 20

// small takes an EVENT or SUPPORTED whole and rewrites it.
func (c *backendConn) small(h header) error {
	if h.length > maxSmall {
		return fmt.Errorf("backend opcode %#02x: %w: %d bytes exceeds the limit of %d", h.opcode, errFrameTooLarge, h.length, maxSmall)
	}
	n := headerLen + int(h.length)
	if err := c.fr.need(n); err != nil {
		return err
	}
	body := c.fr.peek(n)[headerLen:]
	var nb []byte
	var drop bool
	var err error
	if h.opcode == opSupported {
		nb, err = supported(h.flags, body)
	} else {
		nb, drop, err = c.w.event(h.flags, body)
	}
	if err != nil {
		return err
	}
	c.fr.discard(n)
	switch {
	case drop:
		c.out = nil
	case nb == nil:
		c.out = appendFrame(nil, h, body)
	default:
		c.out = appendFrame(nil, h, nb)
	}
	return nil
}

// CloseWrite half-closes the connection underneath, for the pump.
func (c *backendConn) CloseWrite() error { return dbproxy.CloseWrite(c.Conn) }
