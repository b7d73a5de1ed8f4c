package httpproxy

import (
	"net/http"
	"net/netip"
)

// clientIP returns the address of r's client, the one the ip_allow and
// ip_deny middleware judge: the peer address of the connection, or, when
// the peer is one of the mapping's trusted_proxies, the client its
// X-Forwarded-For names (the same address the per-client rate limits
// use). It returns the zero Addr when RemoteAddr is not an address (a
// unix-socket listener), which the IP filter refuses.
func (h *Handler) clientIP(r *http.Request) netip.Addr {
	peer := peerIP(r)
	if h.clients == nil || !peer.IsValid() {
		return peer
	}
	return h.clients.Client(peer, r.Header.Values("X-Forwarded-For"))
}

// peerIP returns the connection's peer address of r (r.RemoteAddr),
// without port or zone, IPv4-mapped IPv6 addresses as IPv4; the zero Addr
// when RemoteAddr is not an address.
func peerIP(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		a, err := netip.ParseAddr(r.RemoteAddr)
		if err != nil {
			return netip.Addr{}
		}
		return a.WithZone("").Unmap()
	}
	return ap.Addr().WithZone("").Unmap()
}
