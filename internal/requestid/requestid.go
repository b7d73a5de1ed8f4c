// Package requestid names each HTTPS request: a short random id that the
// access log records and the backend receives as X-Request-Id, so that one
// request can be followed from leproxy's log into the backend's. A client's
// own X-Request-Id is kept only from a trusted proxy (which set it for the
// same purpose); anyone else could use it to forge or collide with ids in
// the logs.
package requestid

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"net/http"
)

// Header is the request header that carries the id.
const Header = "X-Request-Id"

// maxLen is the longest id kept from a trusted proxy; common formats (a
// UUID, a W3C trace id, an AWS Trace id) are well under it.
const maxLen = 128

// idBytes random bits make an id: 80 bits, 16 characters.
const idBytes = 10

var encoding = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

// New returns a fresh id: 16 lower-case base32 characters from a
// cryptographic random source.
func New() string {
	var b [idBytes]byte
	rand.Read(b[:]) // never fails (crypto/rand, Go 1.24+)
	return encoding.EncodeToString(b[:])
}

// Valid reports whether s may be kept as an id: 1 to 128 visible ASCII
// characters, so that it cannot split a log line or a header.
func Valid(s string) bool {
	if s == "" || len(s) > maxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// Assign sets the id of a request with header h and returns it: the one
// h carries when keep is set (the peer is a trusted proxy) and h carries
// exactly one valid id, else a new one, which replaces whatever h had.
func Assign(h http.Header, keep bool) string {
	if v := h.Values(Header); keep && len(v) == 1 && Valid(v[0]) {
		return v[0]
	}
	id := New()
	h.Set(Header, id)
	return id
}

type ctxKey struct{}

// NewContext returns ctx carrying id.
func NewContext(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the id ctx carries, "" if none.
func FromContext(ctx context.Context) string {
	id, _ := ctx.Value(ctxKey{}).(string)
	return id
}
