package httpproxy

import (
	"bufio"
	"net"
	"net/http"

	"github.com/leproxy/leproxy/internal/config"
)

// applyHeaderOps changes h by ops: Remove, then Set, then Add.
func applyHeaderOps(h http.Header, ops *config.HeaderOps) {
	for _, name := range ops.Remove {
		delete(h, name)
	}
	for _, f := range ops.Set {
		h[f.Name] = []string{f.Value}
	}
	for _, f := range ops.Add {
		h[f.Name] = append(h[f.Name], f.Value)
	}
}

// requestHeaders is the request_headers middleware. It changes the
// request's header in place: ServeHTTP has already made it the proxy's
// own (underscore names dropped).
type requestHeaders struct {
	ops  config.HeaderOps
	next http.Handler
}

func (rh requestHeaders) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	applyHeaderOps(r.Header, &rh.ops)
	rh.next.ServeHTTP(w, r)
}

// responseHeaders is the response_headers middleware: it changes the
// header of every final response (not of 1xx informational ones) just
// before it is sent, refusals and error pages included.
type responseHeaders struct {
	ops  config.HeaderOps
	next http.Handler
}

func (rh responseHeaders) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hw := &headerWriter{ResponseWriter: w, ops: &rh.ops}
	rh.next.ServeHTTP(hw, r)
}

// headerWriter applies ops to the header when the response starts.
type headerWriter struct {
	http.ResponseWriter
	ops     *config.HeaderOps
	applied bool
}

func (w *headerWriter) apply() {
	if !w.applied {
		w.applied = true
		applyHeaderOps(w.ResponseWriter.Header(), w.ops)
	}
}

func (w *headerWriter) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.apply()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *headerWriter) Write(p []byte) (int, error) {
	w.apply()
	return w.ResponseWriter.Write(p)
}

// FlushError flushes the response, as http.ResponseController.Flush does.
func (w *headerWriter) FlushError() error {
	w.apply()
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Flush implements http.Flusher.
func (w *headerWriter) Flush() { _ = w.FlushError() }

// Hijack takes over the connection of a protocol upgrade, whose 101 head
// ReverseProxy writes itself from Header.
func (w *headerWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.apply()
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// Unwrap gives http.ResponseController the writer underneath.
func (w *headerWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

var (
	_ http.Flusher  = (*headerWriter)(nil)
	_ http.Hijacker = (*headerWriter)(nil)
)
