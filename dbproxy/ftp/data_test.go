package ftp

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// TestOneWayClosedSide checks that a data connection side closed by the
// pump's half-close reads as EOF and takes a read deadline without error:
// the other direction's next round sets one, and failing it failed the
// transfer with 425 (seen as "set tcp …: use of closed network
// connection" on a short LIST).
func TestOneWayClosedSide(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if peer := <-accepted; peer != nil {
		defer peer.Close()
	}
	ow := &oneWay{Conn: c}
	if err := ow.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := ow.SetReadDeadline(time.Now().Add(time.Second)); err != nil {
		t.Errorf("SetReadDeadline after CloseWrite: %v, want nil", err)
	}
	if _, err := ow.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("Read after CloseWrite: %v, want EOF", err)
	}
	raw := &oneWay{Conn: c} // not closed by CloseWrite: errors stay errors
	if err := raw.SetReadDeadline(time.Now()); err == nil {
		t.Error("SetReadDeadline on a connection closed elsewhere: nil, want the error")
	}
}
