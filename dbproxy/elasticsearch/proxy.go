package elasticsearch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
)

// nodeProxy is one session's reverse proxy to its route's node. It
// remembers the first request it could not get through to the node.
type nodeProxy struct {
	http.Handler
	// transport connects to the node; the session closes its idle
	// connections when it ends.
	transport *http.Transport

	mu  sync.Mutex
	err error // the first request answered 502, and why
}

// newNodeProxy returns the reverse proxy of session s to r's node. secure
// says whether the client came over TLS.
func newNodeProxy(s *dbproxy.Session, r *dbproxy.Route, secure bool) *nodeProxy {
	target := &url.URL{Scheme: "http", Host: r.Backend}
	backendTLS := s.BackendTLSConfig(r)
	if backendTLS != nil {
		target.Scheme = "https"
	}
	proto := "http"
	if secure {
		proto = "https"
	}
	np := new(nodeProxy)
	np.transport = &http.Transport{
		// Through the session, which closes the connections when it is
		// forced closed.
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, err := s.Dial(ctx, r)
			if err != nil {
				return nil, err
			}
			// The transport keeps the connection for later requests: a
			// deadline Dial took from this dial's ctx must not cut them.
			c.SetDeadline(time.Time{})
			return c, nil
		},
		TLSClientConfig:     backendTLS,
		TLSHandshakeTimeout: s.HandshakeTimeout(),
		// One request at a time per client connection: HTTP/1.1.
		MaxIdleConnsPerHost:   1,
		IdleConnTimeout:       idleConnTimeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		TLSNextProto:          map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
	logger := s.Logger.With("route", r.Host, "backend", r.Backend)
	rp := &httputil.ReverseProxy{
		// ReverseProxy has removed hop-by-hop headers and the client's
		// Forwarded and X-Forwarded-* from pr.Out.
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
			// pr.In.TLS is nil: the server sees the connection through
			// clientConn. The session knows.
			pr.Out.Header.Set("X-Forwarded-Proto", proto)
			pr.Out.Host = pr.In.Host
		},
		Transport:     np.transport,
		FlushInterval: -1,
		BufferPool:    bufPool,
		ErrorLog:      log.New(logWriter{logger, "backend error"}, "", 0),
		ErrorHandler: func(w http.ResponseWriter, req *http.Request, err error) {
			if errors.Is(err, context.Canceled) && req.Context().Err() != nil {
				logger.Debug("client went away", "error", err)
				// Send nothing: returning would make the HTTP server
				// answer 200 with no body to a client that has only
				// half-closed, which would take it for the node's.
				panic(http.ErrAbortHandler)
			}
			if errors.Is(err, net.ErrClosed) {
				// The Server closed the connection to the node, as it
				// does at a forced shutdown: the session is ending.
				np.fail(fmt.Errorf("node connection closed with a request under way: %w", err))
				panic(http.ErrAbortHandler)
			}
			logger.Warn("backend error", "method", req.Method, "path", req.URL.Path, "error", err)
			np.fail(fmt.Errorf("backend unavailable (%s %s answered 502): %w", req.Method, req.URL.Path, err))
			writeError(w, http.StatusBadGateway, "leproxy_backend_unavailable", "could not reach the backend of "+r.Host)
		},
	}
	np.Handler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch {
		case req.Method == http.MethodConnect:
			writeError(w, http.StatusMethodNotAllowed, "leproxy_bad_request", "CONNECT is not served")
		case wantsUpgrade(req.Header):
			writeError(w, http.StatusBadRequest, "leproxy_bad_request", "protocol upgrades are not served")
		default:
			rp.ServeHTTP(w, req)
		}
	})
	return np
}

// fail records err if it is the session's first backend error.
func (np *nodeProxy) fail(err error) {
	np.mu.Lock()
	defer np.mu.Unlock()
	if np.err == nil {
		np.err = err
	}
}

// backendError is the session's first backend error, nil for none.
func (np *nodeProxy) backendError() error {
	np.mu.Lock()
	defer np.mu.Unlock()
	return np.err
}

// bufPool is the httputil.BufferPool of every session's reverse proxy.
var bufPool = &buffers{}

// buffers is a pool of bufSize byte slices.
type buffers struct{ p sync.Pool }

func (bp *buffers) Get() []byte {
	if b, ok := bp.p.Get().(*[]byte); ok {
		return *b
	}
	return make([]byte, bufSize)
}

func (bp *buffers) Put(b []byte) {
	if cap(b) != bufSize {
		return
	}
	b = b[:bufSize]
	bp.p.Put(&b)
}
