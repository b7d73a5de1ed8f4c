// Command floor is the smallest Go TLS-to-TCP relay that a benchmark can
// drive: accept, TLS (answering a PostgreSQL SSLRequest first with -pg),
// dial, two io.Copy. No limits, no timeouts, no logging: the bench scripts
// run it beside leproxy as the floor of what a Go relay costs.
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
		go relay(c, *backend, cfg, *pg)
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
	go func() { io.Copy(b, tc); b.(*net.TCPConn).CloseWrite() }()
	io.Copy(tc, b)
}
