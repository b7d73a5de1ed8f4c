// Command idleconns opens -n TLS connections to an HTTPS server, sends one
// HTTP/1.1 keep-alive request on each, reads the response, and then holds
// every connection open and idle until its standard input is closed (or
// -hold passes). It prints "ready N" once all N connections have had their
// response, so that bench/http.sh can measure what an idle keep-alive TLS
// connection costs the server.
//
//	idleconns -addr 127.0.0.1:8443 -sni bench.localhost -n 5000
package main

import (
	"bufio"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "idleconns:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "127.0.0.1:8443", "server `host:port` to dial")
	sni := flag.String("sni", "bench.localhost", "TLS server name and Host header")
	path := flag.String("path", "/4k", "request path")
	n := flag.Int("n", 5000, "connections to open")
	par := flag.Int("parallel", 32, "connections opened at once")
	hold := flag.Duration("hold", 5*time.Minute, "longest time to hold the connections")
	flag.Parse()

	cfg := &tls.Config{
		ServerName:         *sni,
		NextProtos:         []string{"http/1.1"},
		InsecureSkipVerify: true, // #nosec G402 -- a benchmark of the server's memory, not of trust
		MinVersion:         tls.VersionTLS13,
		CipherSuites:       nil,
	}
	conns := make([]net.Conn, *n)
	errs := make(chan error, *par)
	sem := make(chan struct{}, *par)
	var wg sync.WaitGroup
	for i := range conns {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			c, err := open(*addr, cfg, *sni, *path)
			if err != nil {
				select {
				case errs <- err:
				default:
				}
				return
			}
			conns[i] = c
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	fmt.Printf("ready %d\n", len(conns))
	done := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(done) }()
	select {
	case <-done:
	case <-time.After(*hold):
	}
	for _, c := range conns {
		c.Close()
	}
	return nil
}

// open dials one connection and completes one request on it.
func open(addr string, cfg *tls.Config, host, path string) (net.Conn, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return nil, fmt.Errorf("dialling %s: %w", addr, err)
	}
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, host); err != nil {
		c.Close()
		return nil, fmt.Errorf("writing request: %w", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("reading response: %w", err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil && resp.StatusCode != http.StatusOK {
		err = errors.New(resp.Status)
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("reading response: %w", err)
	}
	return c, nil
}
