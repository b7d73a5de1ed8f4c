package httpproxy

import (
	"net"
	"net/http"
	"strings"

	"github.com/leproxy/leproxy/internal/hostname"
)

// Redirect returns the handler of the plain-HTTP listener. A request for a
// host for which known reports true gets a 308 Permanent Redirect to the
// same path and query, byte for byte, on https://host, with ":httpsPort"
// added unless httpsPort is "" or "443" (a leading colon is accepted). Any
// other request, and every request when known is nil, gets a plain 404.
// known receives the host name without port or trailing dot, in lower case.
func Redirect(known func(host string) bool, httpsPort string) http.Handler {
	port := strings.TrimPrefix(httpsPort, ":")
	if port == "443" {
		port = ""
	}
	return redirectHandler{known: known, port: port}
}

// redirectHandler is the handler Redirect returns.
type redirectHandler struct {
	known func(host string) bool
	port  string // "" for the default port
}

func (h redirectHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	host := hostname.FromHostHeader(r.Host)
	if host == "" || h.known == nil || !h.known(host) {
		http.Error(w, "unknown host", http.StatusNotFound)
		return
	}
	authority := host
	switch {
	case h.port != "":
		authority = net.JoinHostPort(host, h.port)
	case strings.Contains(host, ":"):
		authority = "[" + host + "]"
	}
	http.Redirect(w, r, "https://"+authority+requestTarget(r), http.StatusPermanentRedirect)
}

// requestTarget returns the path and query of r as the client sent them.
// An absolute-form or asterisk-form request target is rebuilt from r.URL.
func requestTarget(r *http.Request) string {
	if strings.HasPrefix(r.RequestURI, "/") {
		return r.RequestURI
	}
	p := r.URL.EscapedPath()
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	if r.URL.RawQuery != "" || r.URL.ForceQuery {
		p += "?" + r.URL.RawQuery
	}
	return p
}
