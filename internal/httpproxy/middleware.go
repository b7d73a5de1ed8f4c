package httpproxy

import (
	"fmt"
	"net/http"
	"net/netip"

	"github.com/leproxy/leproxy/internal/config"
)

// The middleware of a host (config.Middleware) runs in a fixed order,
// whatever the order of the mapping's keys:
//
//	compression → response headers →          (on the response's way out)
//	IP filter → basic auth → body limit → redirects →
//	prefix strip/add → request headers → route (backend or static files)
//
// The two response-side middlewares wrap the ResponseWriter first, so
// that their work covers every response of the host, the refusals of the
// others included; on the way out response headers are applied before
// compression looks at the Content-Type and Content-Encoding. On the
// request side the cheapest refusal that needs no secret comes first (a
// client from a denied network learns nothing, not even that a password
// is asked for, and costs no bcrypt), then authentication, then the body
// limit (an unauthenticated client cannot make the backend read a body),
// then what rewrites the request.
//
// The stack is built once per Handler, so a request pays only for the
// middlewares its host turns on.

// withMiddleware returns route behind the middleware m turns on; with
// none (m nil or empty) it returns route itself. client tells the IP
// filter who the client is; nil means the connection's peer.
func withMiddleware(m *config.Middleware, route http.Handler, client func(*http.Request) netip.Addr) (http.Handler, error) {
	if m == nil {
		return route, nil
	}
	h := route
	if !m.RequestHeaders.Empty() {
		h = requestHeaders{ops: m.RequestHeaders, next: h}
	}
	if m.StripPrefix != "" || m.AddPrefix != "" {
		h = prefixRewrite{strip: m.StripPrefix, add: m.AddPrefix, next: h}
	}
	if len(m.Redirects) > 0 {
		h = redirects{rules: m.Redirects, next: h}
	}
	if m.MaxBody > 0 {
		h = bodyLimit{max: m.MaxBody, next: h}
	}
	if m.BasicAuth != nil {
		ba, err := newBasicAuth(m.BasicAuth, h)
		if err != nil {
			return nil, fmt.Errorf("setting up basic auth: %w", err)
		}
		h = ba
	}
	if len(m.Allow) > 0 || len(m.Deny) > 0 {
		if client == nil {
			client = peerIP
		}
		h = ipFilter{allow: m.Allow, deny: m.Deny, client: client, next: h}
	}
	if !m.ResponseHeaders.Empty() {
		h = responseHeaders{ops: m.ResponseHeaders, next: h}
	}
	if m.Compress != nil {
		h = newCompressor(m.Compress, h)
	}
	return h, nil
}
