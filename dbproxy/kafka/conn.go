package kafka

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/leproxy/leproxy/dbproxy"
)

// Errors that end a session.
var (
	errSASLv0       = errors.New("kafka: SaslHandshake v0 (unframed SASL tokens) is not supported")
	errTooMany      = errors.New("kafka: too many requests awaiting a response")
	errHeaderTooBig = errors.New("kafka: request header too long")
)

// pending holds the requests of one connection whose responses are to be
// rewritten, in the order they were sent. Safe for concurrent use: the
// client's reader adds, the backend's reader takes.
type pending struct {
	mu sync.Mutex
	q  []request
}

func (p *pending) push(r request) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.q) >= maxPending {
		return errTooMany
	}
	p.q = append(p.q, r)
	return nil
}

// take returns the request a response with correlation id corr answers.
// Responses come in request order, so requests before it got none (a
// Produce with acks=0 whose acks leproxy could not read) and are dropped.
func (p *pending) take(corr int32) (request, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, r := range p.q {
		if r.corr == corr {
			p.q = append(p.q[:0], p.q[i+1:]...)
			return r, true
		}
	}
	return request{}, false
}

// A reqScanner follows the frames of a client's byte stream, without
// changing it, and records the requests whose responses are rewritten.
type reqScanner struct {
	max   int // bound on a frame's size
	track func(request) error

	phase int    // scanSize, scanHead or scanSkip
	head  []byte // start of the current frame, size included
	want  int    // bytes of head wanted
	skip  int    // bytes of the current frame after head
}

const (
	scanSize = iota
	scanHead
	scanSkip
)

// feed scans p, the next bytes of the stream.
func (s *reqScanner) feed(p []byte) error {
	for len(p) > 0 {
		switch s.phase {
		case scanSkip:
			n := min(s.skip, len(p))
			s.skip -= n
			p = p[n:]
			if s.skip == 0 {
				s.phase = scanSize
			}
		case scanSize:
			n := min(4-len(s.head), len(p))
			s.head = append(s.head, p[:n]...)
			p = p[n:]
			if len(s.head) < 4 {
				continue
			}
			size := int(int32(binary.BigEndian.Uint32(s.head)))
			if size < 10 || size > s.max {
				return fmt.Errorf("%w: request of %d bytes (limit %d)", errFrameSize, size, s.max)
			}
			look := min(size, headCap)
			s.want, s.skip, s.phase = 4+look, size-look, scanHead
		case scanHead:
			n := min(s.want-len(s.head), len(p))
			s.head = append(s.head, p[:n]...)
			p = p[n:]
			if len(s.head) < s.want {
				continue
			}
			if err := s.request(s.head[4:]); err != nil {
				return err
			}
			s.head = s.head[:0]
			s.phase = scanSkip
			if s.skip == 0 {
				s.phase = scanSize
			}
		}
	}
	return nil
}

// request looks at the start of one request frame's content.
func (s *reqScanner) request(content []byte) error {
	h, err := parseRequestHeader(content)
	if err != nil {
		if len(content) == headCap {
			return errHeaderTooBig
		}
		return fmt.Errorf("kafka: request header: %w", err)
	}
	if h.key == keySASLHandshake && h.version == 0 {
		return errSASLv0
	}
	first, ok := rewritten[h.key]
	if !ok || h.version < first {
		return nil
	}
	if h.key != keyApiVersions && h.version > maxVersion(h.key) {
		return fmt.Errorf("kafka: api key %d (%s) version %d is newer than leproxy can rewrite (%d)",
			h.key, keyName(h.key), h.version, maxVersion(h.key))
	}
	if h.key == keyProduce {
		if acks, ok := produceAcks(h.body, h.version); ok && acks == 0 {
			return nil // no response comes
		}
	}
	return s.track(request{corr: h.corr, key: h.key, version: h.version})
}

// clientConn is the client side of a Kafka session: reads pass through
// unchanged and are scanned for requests whose responses are rewritten.
type clientConn struct {
	net.Conn
	scan reqScanner
}

func (c *clientConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		if e := c.scan.feed(p[:n]); e != nil {
			return 0, e
		}
	}
	return n, err
}

// CloseWrite half-closes the connection underneath, for the pump.
func (c *clientConn) CloseWrite() error { return dbproxy.CloseWrite(c.Conn) }

// backendConn is the backend side of a Kafka session: responses to
// requests that pending holds are read whole and rewritten; every other
// response streams through unbuffered. It hides the connection's WriteTo,
// and with it splice, which the client's TLS rules out anyway.
type backendConn struct {
	net.Conn
	pend *pending
	w    *rewriter
	max  int // bound on a response frame read whole

	phase int // respHeader, respStream or respBody
	hdr   [8]byte
	nh    int
	left  int // respStream: bytes of the frame still to pass
	req   request
	frame []byte // respBody: the frame's content
	got   int
	out   []byte // bytes ready for the client
	off   int
	rest  []byte // bytes ready for the client after out: a frame's content
}

const (
	respHeader = iota
	respStream
	respBody
)

// keepFrame bounds the frame buffer kept between responses (Fetch
// responses at v16+ are read whole).
const keepFrame = 4 << 20

func (c *backendConn) Read(p []byte) (int, error) {
	for {
		if c.off < len(c.out) {
			n := copy(p, c.out[c.off:])
			c.off += n
			if c.off == len(c.out) {
				c.out, c.off = c.out[:0], 0
			}
			return n, nil
		}
		if len(c.rest) > 0 {
			n := copy(p, c.rest)
			c.rest = c.rest[n:]
			if len(c.rest) == 0 && cap(c.frame) > keepFrame {
				c.frame = nil
			}
			return n, nil
		}
		if len(p) == 0 {
			return 0, nil
		}
		switch c.phase {
		case respStream:
			n, err := c.Conn.Read(p[:min(len(p), c.left)])
			c.left -= n
			if c.left == 0 {
				c.phase = respHeader
			}
			return n, err
		case respHeader:
			n, err := c.Conn.Read(c.hdr[c.nh:])
			c.nh += n
			if c.nh < len(c.hdr) {
				if err != nil {
					return 0, err
				}
				continue
			}
			if err := c.header(); err != nil {
				return 0, err
			}
		case respBody:
			n, err := c.Conn.Read(c.frame[c.got:])
			c.got += n
			if c.got < len(c.frame) {
				if err != nil {
					return 0, err
				}
				continue
			}
			if err := c.body(); err != nil {
				return 0, err
			}
		}
	}
}

// header acts on a response's size and correlation id.
func (c *backendConn) header() error {
	c.nh = 0
	size := int(int32(binary.BigEndian.Uint32(c.hdr[:])))
	if size < 4 {
		return fmt.Errorf("%w: response of %d bytes", errFrameSize, size)
	}
	req, ok := c.pend.take(int32(binary.BigEndian.Uint32(c.hdr[4:])))
	if !ok {
		c.out = append(c.out[:0], c.hdr[:]...)
		c.left = size - 4
		if c.left > 0 {
			c.phase = respStream
		}
		return nil
	}
	if size > c.max {
		return fmt.Errorf("%w: %s response of %d bytes (limit %d)", errFrameSize, keyName(req.key), size, c.max)
	}
	if cap(c.frame) < size {
		c.frame = make([]byte, size)
	}
	c.frame = c.frame[:size]
	copy(c.frame, c.hdr[4:])
	c.got, c.req, c.phase = 4, req, respBody
	if c.got == size {
		return c.body()
	}
	return nil
}

// body rewrites a response read whole.
func (c *backendConn) body() error {
	c.phase = respHeader
	content, err := c.w.rewrite(c.req, c.frame)
	if err != nil {
		return err
	}
	if content == nil {
		content = c.frame
	}
	c.out = binary.BigEndian.AppendUint32(c.out[:0], uint32(len(content))) // #nosec G115 -- bounded by max or by the input frame
	c.rest = content
	return nil
}

// CloseWrite half-closes the connection underneath, for the pump.
func (c *backendConn) CloseWrite() error { return dbproxy.CloseWrite(c.Conn) }
