// Command floor is the smallest Go TLS-to-TCP relay that a benchmark can
// drive: accept, TLS (answering a PostgreSQL SSLRequest first with -pg, or
// doing MySQL's in-handshake TLS upgrade with -mysql), dial, two io.Copy.
// No limits, no timeouts, no logging: the bench scripts run it beside
// leproxy as the floor of what a Go relay costs.
package main

import (
	"crypto/tls"
	"flag"
	"io"
	"log"
	"net"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	backend := flag.String("backend", "", "plaintext backend host:port")
	cert := flag.String("cert", "", "certificate PEM file")
	key := flag.String("key", "", "key PEM file")
	pg := flag.Bool("pg", false, "answer a PostgreSQL SSLRequest before TLS")
	mysql := flag.Bool("mysql", false, "upgrade a MySQL client to TLS inside the handshake")
	flag.Parse()
	kp, err := tls.LoadX509KeyPair(*cert, *key)
	if err != nil {
		log.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{kp}}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	for {
		c, err := l.Accept()
		if err != nil {
			log.Fatal(err)
		}
		switch {
		case *mysql:
			go relayMySQL(c, *backend, cfg)
		default:
			go relay(c, *backend, cfg, *pg)
		}
	}
}

func relay(c net.Conn, backend string, cfg *tls.Config, pg bool) {
	defer c.Close()
	if pg { // SSLRequest: length 8, code 80877103
		var req [8]byte
		if _, err := io.ReadFull(c, req[:]); err != nil || req != [8]byte{0, 0, 0, 8, 4, 210, 22, 47} {
			return
		}
		c.Write([]byte{'S'})
	}
	tc := tls.Server(c, cfg)
	b, err := net.Dial("tcp", backend)
	if err != nil {
		return
	}
	defer b.Close()
	pipe(tc, b)
}

// relayMySQL passes the server's greeting (which must offer CLIENT_SSL),
// takes the client's SSLRequest, runs TLS, then sends the client's
// handshake response to the server one sequence number lower with
// CLIENT_SSL cleared and the server's first reply one higher. That is all a
// mysql_native_password login needs; an auth switch is not handled.
func relayMySQL(c net.Conn, backend string, cfg *tls.Config) {
	defer c.Close()
	b, err := net.Dial("tcp", backend)
	if err != nil {
		return
	}
	defer b.Close()
	greeting, err := readPacket(b)
	if err != nil {
		return
	}
	if _, err := c.Write(greeting); err != nil {
		return
	}
	if _, err := readPacket(c); err != nil { // SSLRequest, seq 1
		return
	}
	tc := tls.Server(c, cfg)
	resp, err := readPacket(tc) // HandshakeResponse, seq 2
	if err != nil || len(resp) < 6 {
		return
	}
	resp[3]--
	resp[5] &^= 0x08 // CLIENT_SSL (0x800) in the low capability bytes
	if _, err := b.Write(resp); err != nil {
		return
	}
	reply, err := readPacket(b) // OK or ERR, seq 2
	if err != nil {
		return
	}
	reply[3]++
	if _, err := tc.Write(reply); err != nil {
		return
	}
	pipe(tc, b)
}

// readPacket reads one MySQL packet, header included.
func readPacket(r io.Reader) ([]byte, error) {
	var h [4]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	p := make([]byte, 4+(int(h[0])|int(h[1])<<8|int(h[2])<<16))
	copy(p, h[:])
	_, err := io.ReadFull(r, p[4:])
	return p, err
}

func pipe(tc *tls.Conn, b net.Conn) {
	go func() { io.Copy(b, tc); b.(*net.TCPConn).CloseWrite() }()
	io.Copy(tc, b)
}
