package admin

import (
	"crypto/tls"
	"net"
	"net/http"
)

// ConnState returns a function for http.Server.ConnState that counts the
// TLS handshakes of the server's connections under listener (for example
// "https") in leproxy_tls_handshakes_total and
// leproxy_tls_handshake_failures_total. A handshake is counted when its
// connection ends (closed, or hijacked by a websocket upgrade): by then
// net/http's own handshake is over, so its outcome is known, including a
// client that rejected the certificate. A connection closed before it
// completed a handshake (a client that gave up, a port scan, plaintext on
// the TLS port) is a failure. Connections that are not *tls.Conn are not
// counted. To keep another ConnState hook, call both.
func (m *Metrics) ConnState(listener string) func(net.Conn, http.ConnState) {
	return func(c net.Conn, state http.ConnState) {
		if state != http.StateClosed && state != http.StateHijacked {
			return
		}
		tc, ok := c.(*tls.Conn)
		if !ok {
			return
		}
		// The connection's goroutine is done with the handshake, so this
		// does not wait on it.
		m.handshake(listener, tc.ConnectionState().HandshakeComplete)
	}
}
