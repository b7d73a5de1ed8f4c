package httpproxy

import (
	"net/http"
	"net/netip"
)

// clientIP returns the address of r's client, the one the ip_allow and
// ip_deny middleware judge: today the peer address of the connection
// (r.RemoteAddr), without port or zone, IPv4-mapped IPv6 addresses as
// IPv4. It returns the zero Addr when RemoteAddr is not an address (a
// unix-socket listener), which the IP filter refuses.
//
// This is the one place that decides who the client is; trusting the
// X-Forwarded-For of known proxies belongs here.
func clientIP(r *http.Request) netip.Addr {
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
