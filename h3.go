package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"

	"github.com/leproxy/leproxy/internal/admin"
	"github.com/leproxy/leproxy/internal/certs"
	"github.com/leproxy/leproxy/internal/clientlimit"
	"github.com/leproxy/leproxy/internal/httpproxy"
)

// h3Wanted reports whether HTTP/3 is served: -h3 as given, or by default
// when -addr names a concrete port (a number other than 0, or a service
// name such as https). With a port chosen by the kernel (:0) there is no
// port to announce before the listener is bound, so HTTP/3 stays off
// unless -h3 asks for it, and then takes the TCP listener's port.
func h3Wanted(a runArgs, set map[string]bool) bool {
	if set["h3"] {
		return a.H3
	}
	return a.H3 && concretePort(a.Addr)
}

// concretePort reports whether the port of addr is fixed before binding.
func concretePort(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return false
	}
	n, err := net.LookupPort("udp", port)
	return err == nil && n != 0
}

// listenH3 binds the UDP socket of HTTP/3: the host of -addr, the port the
// HTTPS listener tcp has.
func listenH3(addr string, tcp net.Listener) (*net.UDPConn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("-addr: %w", err)
	}
	port := portOf(tcp.Addr())
	ua, err := net.ResolveUDPAddr("udp", net.JoinHostPort(host, port))
	if err != nil {
		return nil, fmt.Errorf("-h3: %w", err)
	}
	conn, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("-h3: UDP %s: %w", ua, err)
	}
	return conn, nil
}

// altSvcPort is the port Alt-Svc announces: -h3-port, else the socket's.
func altSvcPort(a runArgs, c *net.UDPConn) int {
	if a.H3Port != 0 {
		return a.H3Port
	}
	return udpPort(c)
}

// udpPort is the port of a UDP socket.
func udpPort(c *net.UDPConn) int {
	if ua, ok := c.LocalAddr().(*net.UDPAddr); ok {
		return ua.Port
	}
	_, p, _ := net.SplitHostPort(c.LocalAddr().String())
	n, _ := strconv.Atoi(p)
	return n
}

// newH3Server is the HTTP/3 side of the HTTPS listener: the same handler
// chain through lv (so a reload swaps it too), the same certificates
// (never a tls-alpn-01 challenge over QUIC), the same limits.https guard
// and timeouts.
func newH3Server(conn *net.UDPConn, a runArgs, cm *certs.Manager, lv *live, metrics *admin.Metrics, logger *slog.Logger) (*httpproxy.H3Server, error) {
	// quic-go prints its own note on small UDP buffers with the standard
	// log package, outside -log-format; the server logs it instead.
	if err := os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true"); err != nil {
		return nil, fmt.Errorf("-h3: %w", err)
	}
	return httpproxy.NewH3Server(conn, httpproxy.H3Options{
		Handler:            metrics.InstrumentHTTP(lv, lv.Known, lv.backendOf, logger, a.AccessLog),
		TLSConfig:          cm.TLSConfigWithDefault("", httpproxy.NextProtoH3),
		HandshakeTimeout:   readHeaderTimeout,
		IdleTimeout:        a.IdleTimeout,
		ReadTimeout:        a.ReadTimeout,
		WriteTimeout:       a.WriteTimeout,
		MaxHeaderBytes:     a.MaxHeaderBytes,
		MaxIncomingStreams: httpproxy.MaxConcurrentStreams,
		OnHandshake:        func(err error) { metrics.TLSHandshake("h3", err) },
		Guard: func() httpproxy.ConnGuard {
			if g := lv.httpsGuard.Load(); g != nil {
				return clientlimit.NetGuard{Guard: g}
			}
			return nil
		},
		Logger: logger,
	})
}
