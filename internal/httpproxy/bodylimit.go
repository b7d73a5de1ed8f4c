package httpproxy

import (
	"net/http"
)

// bodyLimit is the max_body middleware. A request that announces a longer
// body (Content-Length) gets 413 Content Too Large before anything reads
// it; one whose body turns out longer while the backend reads it is cut
// there, and its client gets 413 too (see newProxy's error handler) unless
// the backend has already answered.
type bodyLimit struct {
	max  int64
	next http.Handler
}

func (l bodyLimit) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength > l.max {
		w.Header().Set("Connection", "close")
		http.Error(w, "413 request body too large", http.StatusRequestEntityTooLarge)
		return
	}
	switch b := r.Body.(type) {
	case nil:
	case *clientBody:
		// Inside clientBody, so that the error handler finds the
		// *http.MaxBytesError as the client's fault.
		b.ReadCloser = http.MaxBytesReader(w, b.ReadCloser, l.max)
	default:
		if r.Body != http.NoBody {
			r.Body = http.MaxBytesReader(w, r.Body, l.max)
		}
	}
	l.next.ServeHTTP(w, r)
}
