// Package memcached is leproxy's memcached protocol: TLS from the first
// byte, as memcached's own -Z does; then the text, meta or binary
// protocol, piped verbatim. No ALPN (memcached neither offers nor expects
// one).
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
package memcached

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"

	"github.com/leproxy/leproxy/dbproxy"
)

func init() {
	dbproxy.Register("memcached", func() dbproxy.Protocol { return newProtocol() })
}

const (
	binaryRequest  = 0x80
	binaryResponse = 0x81
	headerLen      = 24 // of a binary request or response

	statusAuthError = 0x0020
	statusTempFail  = 0x0086

	// maxLine bounds the command line read to name a refused text
	// client's command; memcached's own key limit is 250 bytes.
	maxLine = 2048

	tlsRequired = "TLS is required on this port"
)

// protocol is the memcached Protocol.
type protocol struct {
	tf dbproxy.TLSFirst
}

var _ dbproxy.Protocol = (*protocol)(nil)

func newProtocol() *protocol {
	p := &protocol{}
	p.tf = dbproxy.TLSFirst{
		Plaintext: func(_ context.Context, conn net.Conn) string {
			req, _ := readRequest(conn)
			writeError(conn, req, statusAuthError, tlsRequired)
			return req.String()
		},
		Refuse: func(_ context.Context, conn net.Conn, kind dbproxy.RefusalKind, msg string) {
			// The protocol is known only once the client has sent its
			// first request; one that never does is closed.
			req, err := readRequest(conn)
			if err != nil && req.first == 0 {
				return
			}
			status := uint16(statusAuthError)
			if kind == dbproxy.RefuseBackend {
				status = statusTempFail
			}
			writeError(conn, req, status, msg)
		},
	}
	return p
}

func (*protocol) Name() string   { return "memcached" }
func (*protocol) ALPN() []string { return nil }

// Handshake implements dbproxy.Protocol.
func (p *protocol) Handshake(ctx context.Context, client net.Conn, s *dbproxy.Session) (net.Conn, net.Conn, error) {
	return p.tf.Handshake(ctx, client, s)
}

// request is what leproxy reads of a memcached client's first request:
// enough to answer in its protocol and to name it in the log.
type request struct {
	first   byte            // 0 when nothing was read
	binary  bool            // a binary request header was read whole
	header  [headerLen]byte // binary: the request header
	command string          // text: the command word, printable
}

// readRequest reads the start of a client's first request: the 24-byte
// header of a binary request, or a text command line of up to maxLine
// bytes. A partial read is reported with what it got.
func readRequest(r io.Reader) (request, error) {
	var req request
	if _, err := io.ReadFull(r, req.header[:1]); err != nil {
		return req, fmt.Errorf("reading memcached request: %w", err)
	}
	req.first = req.header[0]
	if req.first == binaryRequest {
		if _, err := io.ReadFull(r, req.header[1:]); err != nil {
			return req, fmt.Errorf("reading memcached binary request header: %w", err)
		}
		req.binary = true
		return req, nil
	}
	br := bufio.NewReaderSize(io.LimitReader(r, maxLine-1), maxLine)
	line, err := br.ReadSlice('\n')
	req.command = dbproxy.PrintableWord(append([]byte{req.first}, line...), 32)
	if err != nil {
		return req, fmt.Errorf("reading memcached command line: %w", err)
	}
	return req, nil
}

// String names the request for the log.
func (req request) String() string {
	switch {
	case req.binary:
		return fmt.Sprintf("memcached binary opcode %#02x", req.header[1])
	case req.first == binaryRequest:
		return "memcached binary request"
	case req.command != "":
		return "memcached command " + req.command
	}
	return ""
}

// writeError answers req with an error in its protocol: a binary response
// with status and msg when req starts a binary request, a text
// SERVER_ERROR line otherwise.
func writeError(w io.Writer, req request, status uint16, msg string) error {
	if req.first == binaryRequest {
		_, err := w.Write(appendBinaryError(nil, req.header, status, msg))
		return err
	}
	_, err := io.WriteString(w, "SERVER_ERROR "+msg+"\r\n")
	return err
}

// appendBinaryError appends a binary protocol response to the request
// whose header is reqHeader: same opcode and opaque, no key or extras, the
// status, and msg as the value.
func appendBinaryError(dst []byte, reqHeader [headerLen]byte, status uint16, msg string) []byte {
	var h [headerLen]byte
	h[0] = binaryResponse
	h[1] = reqHeader[1] // opcode
	binary.BigEndian.PutUint16(h[6:], status)
	binary.BigEndian.PutUint32(h[8:], uint32(len(msg)))
	copy(h[12:16], reqHeader[12:16]) // opaque
	dst = append(dst, h[:]...)
	return append(dst, msg...)
}
