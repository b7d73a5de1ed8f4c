package dbproxy

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
)

// memcached: TLS from the first byte, as memcached's own -Z does; then the
// text, meta or binary protocol, piped verbatim. No ALPN (memcached
// neither offers nor expects one).
//
// A client that leproxy refuses is told so in the protocol it speaks,
// which the first byte of its request tells: 0x80 is a binary request,
// anything else a text or meta command line.
//
//	text:   SERVER_ERROR <message>\r\n
//	binary: a response (magic 0x81) with the request's opcode and opaque,
//	        the status below and the message as its value
//
// Binary statuses: 0x0020 (authentication error) when the client is
// refused (plaintext on the TLS port, no route for its server name), which
// is what memcached itself answers to a binary command sent before the
// SASL authentication it requires, so clients report it as a refusal and
// do not retry; 0x0086 (temporary failure) when the backend is down, a
// condition a retry may get past.

func init() {
	Register("memcached", func() Protocol { return newMemcached() })
}

const (
	mcBinaryRequest  = 0x80
	mcBinaryResponse = 0x81
	mcHeaderLen      = 24

	mcStatusAuthError = 0x0020
	mcStatusTempFail  = 0x0086

	// maxMemcachedLine bounds the command line read to name a refused text
	// client's command; memcached's own key limit is 250 bytes.
	maxMemcachedLine = 2048

	mcTLSRequired = "TLS is required on this port"
)

// memcached is the memcached Protocol.
type memcached struct {
	tf tlsFirst
}

var _ Protocol = (*memcached)(nil)

func newMemcached() *memcached {
	p := &memcached{}
	p.tf = tlsFirst{
		plaintext: func(_ context.Context, conn net.Conn) string {
			req, _ := readMemcachedRequest(conn)
			writeMemcachedError(conn, req, mcStatusAuthError, mcTLSRequired)
			return req.String()
		},
		refuse: func(_ context.Context, conn net.Conn, kind refusalKind, msg string) {
			// The protocol is known only once the client has sent its
			// first request; one that never does is closed.
			req, err := readMemcachedRequest(conn)
			if err != nil && req.first == 0 {
				return
			}
			status := uint16(mcStatusAuthError)
			if kind == refuseBackend {
				status = mcStatusTempFail
			}
			writeMemcachedError(conn, req, status, msg)
		},
	}
	return p
}

func (*memcached) Name() string   { return "memcached" }
func (*memcached) ALPN() []string { return nil }

// Handshake implements Protocol.
func (p *memcached) Handshake(ctx context.Context, client net.Conn, s *Session) (net.Conn, net.Conn, error) {
	return p.tf.handshake(ctx, client, s)
}

// mcRequest is what leproxy reads of a memcached client's first request:
// enough to answer in its protocol and to name it in the log.
type mcRequest struct {
	first   byte              // 0 when nothing was read
	binary  bool              // a binary request header was read whole
	header  [mcHeaderLen]byte // binary: the request header
	command string            // text: the command word, printable
}

// readMemcachedRequest reads the start of a client's first request: the
// 24-byte header of a binary request, or a text command line of up to
// maxMemcachedLine bytes. A partial read is reported with what it got.
func readMemcachedRequest(r io.Reader) (mcRequest, error) {
	var req mcRequest
	if _, err := io.ReadFull(r, req.header[:1]); err != nil {
		return req, fmt.Errorf("reading memcached request: %w", err)
	}
	req.first = req.header[0]
	if req.first == mcBinaryRequest {
		if _, err := io.ReadFull(r, req.header[1:]); err != nil {
			return req, fmt.Errorf("reading memcached binary request header: %w", err)
		}
		req.binary = true
		return req, nil
	}
	br := bufio.NewReaderSize(io.LimitReader(r, maxMemcachedLine-1), maxMemcachedLine)
	line, err := br.ReadSlice('\n')
	req.command = printableWord(append([]byte{req.first}, line...), 32)
	if err != nil {
		return req, fmt.Errorf("reading memcached command line: %w", err)
	}
	return req, nil
}

// String names the request for the log.
func (req mcRequest) String() string {
	switch {
	case req.binary:
		return fmt.Sprintf("memcached binary opcode %#02x", req.header[1])
	case req.first == mcBinaryRequest:
		return "memcached binary request"
	case req.command != "":
		return "memcached command " + req.command
	}
	return ""
}

// writeMemcachedError answers req with an error in its protocol: a binary
// response with status and msg when req starts a binary request, a text
// SERVER_ERROR line otherwise.
func writeMemcachedError(w io.Writer, req mcRequest, status uint16, msg string) error {
	if req.first == mcBinaryRequest {
		_, err := w.Write(appendMemcachedBinaryError(nil, req.header, status, msg))
		return err
	}
	_, err := io.WriteString(w, "SERVER_ERROR "+msg+"\r\n")
	return err
}

// appendMemcachedBinaryError appends a binary protocol response to the
// request whose header is reqHeader: same opcode and opaque, no key or
// extras, the status, and msg as the value.
func appendMemcachedBinaryError(dst []byte, reqHeader [mcHeaderLen]byte, status uint16, msg string) []byte {
	var h [mcHeaderLen]byte
	h[0] = mcBinaryResponse
	h[1] = reqHeader[1] // opcode
	binary.BigEndian.PutUint16(h[6:], status)
	binary.BigEndian.PutUint32(h[8:], uint32(len(msg)))
	copy(h[12:16], reqHeader[12:16]) // opaque
	dst = append(dst, h[:]...)
	return append(dst, msg...)
}
