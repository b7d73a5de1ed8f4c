package cqltest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
)

// The client half of the codec, for tests that speak CQL to a proxy by
// hand.

// ServerError is an ERROR frame: its code and message.
type ServerError struct {
	Code    int32
	Message string
}

func (e *ServerError) Error() string { return fmt.Sprintf("cql error %#04x: %s", e.Code, e.Message) }

// ParseError reads an ERROR body.
func ParseError(body []byte) *ServerError {
	d := &dec{b: body}
	return &ServerError{Code: d.int(), Message: d.str()}
}

// Request is a frame of protocol version 4 from a client.
func Request(stream int16, op byte, body []byte) []byte {
	return Frame{Version: 4, Stream: stream, Opcode: op, Body: body}.Bytes()
}

// QueryBody is a QUERY body for q at consistency ONE with flags.
func QueryBody(q string, flags byte) []byte {
	e := &enc{}
	e.long(q)
	e.short(1)
	e.b = append(e.b, flags)
	return e.b
}

// StartupBody is a STARTUP body with opts.
func StartupBody(opts map[string]string) []byte {
	e := &enc{}
	e.short(len(opts))
	for k, v := range opts {
		e.str(k)
		e.str(v)
	}
	return e.b
}

// Expect reads one frame and checks that it answers stream with op; an
// ERROR frame is returned as a *ServerError.
func Expect(r io.Reader, stream int16, op byte) (Frame, error) {
	f, err := ReadFrame(r)
	if err != nil {
		return f, err
	}
	if f.Opcode == OpError {
		return f, ParseError(f.Body)
	}
	if f.Stream != stream || f.Opcode != op {
		return f, fmt.Errorf("cqltest: got opcode %#x on stream %d, want %#x on %d", f.Opcode, f.Stream, op, stream)
	}
	return f, nil
}

// Handshake sets up a session on c as a driver does: OPTIONS, then
// STARTUP, expecting READY.
func Handshake(c net.Conn) error {
	if _, err := c.Write(Request(0, OpOptions, nil)); err != nil {
		return err
	}
	if _, err := Expect(c, 0, OpSupported); err != nil {
		return err
	}
	if _, err := c.Write(Request(1, OpStartup, StartupBody(map[string]string{"CQL_VERSION": "3.0.0"}))); err != nil {
		return err
	}
	_, err := Expect(c, 1, OpReady)
	return err
}

// QueryRequest is a QUERY frame for q on stream 2.
func QueryRequest(q string) []byte { return Request(2, OpQuery, QueryBody(q, 0)) }

// ReadAnswer reads the answer to a QueryRequest for a query that is not
// about a system table: the fake's "name:query".
func ReadAnswer(r io.Reader) (string, error) {
	f, err := Expect(r, 2, OpResult)
	if err != nil {
		return "", err
	}
	p, err := ParseRows(f.Body)
	if err != nil {
		return "", err
	}
	if len(p.Rows) != 1 || len(p.Rows[0]) != 1 {
		return "", errors.New("cqltest: answer is not one value")
	}
	return string(p.Rows[0][0]), nil
}

// RowsFor is the RESULT body node 1 of a three-node cluster (127.0.0.2,
// .3 and .4, port 9042) answers q with, for seeds and benchmarks.
func RowsFor(t testing.TB, q string) []byte {
	c := &Cluster{t: t, cfg: Config{ReleaseVersion: "4.1.3", Nodes: []Node{
		{Name: "node1", Addr: netip.MustParseAddrPort("127.0.0.2:9042"), HostID: "6a2d0e5c-1b0f-4c52-9a44-1f0d7f0b0001"},
		{Name: "node2", Addr: netip.MustParseAddrPort("127.0.0.3:9042"), HostID: "6a2d0e5c-1b0f-4c52-9a44-1f0d7f0b0002"},
		{Name: "node3", Addr: netip.MustParseAddrPort("127.0.0.4:9042"), HostID: "6a2d0e5c-1b0f-4c52-9a44-1f0d7f0b0003"},
	}}}
	ks, table, cols, rows := c.answer(0, q)
	return rowsBody(ks, table, cols, rows, false)
}

// SupportedBody is the fake's SUPPORTED body.
func SupportedBody() []byte { return supportedBody() }
