package httpproxy

import (
	"net/http"
	"net/netip"
)

// ipFilter is the ip_allow/ip_deny middleware: a client (Handler.clientIP)
// in a deny network, or outside every allow network when there are any,
// gets 403 Forbidden.
type ipFilter struct {
	allow, deny []netip.Prefix
	client      func(*http.Request) netip.Addr
	next        http.Handler
}

func (f ipFilter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !f.allowed(f.client(r)) {
		http.Error(w, "403 forbidden", http.StatusForbidden)
		return
	}
	f.next.ServeHTTP(w, r)
}

// allowed reports whether ip may pass; the zero Addr never does.
func (f ipFilter) allowed(ip netip.Addr) bool {
	if !ip.IsValid() {
		return false
	}
	for _, p := range f.deny {
		if p.Contains(ip) {
			return false
		}
	}
	if len(f.allow) == 0 {
		return true
	}
	for _, p := range f.allow {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
