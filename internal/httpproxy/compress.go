package httpproxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/leproxy/leproxy/internal/config"
)

// zstdWindow is the zstd window: 1 MiB bounds the memory of each stream
// and is well within what browsers accept (8 MiB).
const zstdWindow = 1 << 20

var (
	gzipPool = sync.Pool{New: func() any {
		w, _ := gzip.NewWriterLevel(nil, gzip.DefaultCompression)
		return w
	}}
	zstdPool = sync.Pool{New: func() any {
		// Concurrency 1: synchronous, no goroutines of its own.
		w, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(zstdWindow),
			zstd.WithEncoderLevel(zstd.SpeedDefault))
		if err != nil {
			panic(fmt.Sprintf("httpproxy: zstd options: %v", err)) // constant options
		}
		return w
	}}
)

// encoder is a pooled gzip or zstd writer.
type encoder interface {
	io.WriteCloser
	Flush() error
	Reset(io.Writer)
}

// compressor is the compress middleware. The client's Accept-Encoding
// picks the coding (negotiateEncoding, ties going to the configured
// order); the response is compressed only when it has a compressible
// Content-Type (compressibleType), no Content-Encoding of its own, no
// Cache-Control: no-transform, a status with a body that is not 206, and
// a Content-Length of at least MinLength, or a body that turns out to be
// that long or is flushed (see compressWriter). Requests with Range,
// HEAD requests and protocol upgrades (websocket) pass untouched. A
// compressed response loses Content-Length and Accept-Ranges, its strong
// ETag becomes weak, and every response of a compressible type gets
// "Vary: Accept-Encoding" unless it is encoded already. Flushes flush the encoder, so streaming
// responses (server-sent events) still arrive as they are written.
type compressor struct {
	encodings []string
	minLength int64
	next      http.Handler
}

func newCompressor(c *config.Compress, next http.Handler) compressor {
	return compressor{encodings: c.Encodings, minLength: c.MinLength, next: next}
}

func (c compressor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodHead || r.Header.Get("Range") != "" || hasToken(r.Header["Connection"], "upgrade") {
		c.next.ServeHTTP(w, r)
		return
	}
	cw := &compressWriter{ResponseWriter: w, coding: negotiateEncoding(r.Header["Accept-Encoding"], c.encodings), minLength: c.minLength}
	defer func() {
		if p := recover(); p != nil {
			// ReverseProxy aborts a response whose backend failed
			// mid-body (http.ErrAbortHandler): ending the stream or
			// sending what is held would make it look complete.
			cw.enc = nil
			panic(p)
		}
		cw.close()
	}()
	c.next.ServeHTTP(cw, r)
}

// compressWriter decides at WriteHeader whether to compress the response.
// A compressible response of unknown length is held back (status, header
// and up to minLength bytes) until it proves long enough to compress, is
// flushed (a stream: compressed), or ends short (sent as it is, with its
// Content-Length).
type compressWriter struct {
	http.ResponseWriter
	coding      string // negotiated; "" when the client accepts none
	minLength   int64
	wroteHeader bool
	pending     bool    // status and header held back, body in held
	code        int     // the status held back
	held        []byte  // while pending
	enc         encoder // nil when not compressing
}

func (w *compressWriter) WriteHeader(code int) {
	if w.wroteHeader {
		w.ResponseWriter.WriteHeader(code) // net/http logs the superfluous call
		return
	}
	if code < 200 {
		if code == http.StatusSwitchingProtocols {
			w.wroteHeader = true
		}
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.wroteHeader = true
	h := w.ResponseWriter.Header()
	if bodyAllowed(code) && code != http.StatusPartialContent && len(h["Content-Encoding"]) == 0 &&
		compressibleType(h.Get("Content-Type")) {
		addVary(h, "Accept-Encoding")
		if w.coding != "" && w.compressible(h) {
			if h.Get("Content-Length") == "" && w.minLength > 0 {
				w.pending, w.code = true, code
				return
			}
			w.start(h)
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

// compressible reports whether the header h of a compressible type lets
// the body be compressed.
func (w *compressWriter) compressible(h http.Header) bool {
	if h.Get("Content-Range") != "" || hasToken(h["Cache-Control"], "no-transform") {
		return false
	}
	if cl := h.Get("Content-Length"); cl != "" {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil || n < w.minLength {
			return false
		}
	}
	return true
}

// start sets up the encoder and the header of a compressed response.
func (w *compressWriter) start(h http.Header) {
	switch w.coding {
	case "gzip":
		w.enc = gzipPool.Get().(*gzip.Writer)
	case "zstd":
		w.enc = zstdPool.Get().(*zstd.Encoder)
	default:
		return
	}
	w.enc.Reset(w.ResponseWriter)
	h.Set("Content-Encoding", w.coding)
	h.Del("Content-Length")
	h.Del("Accept-Ranges")
	if et := h.Get("Etag"); strings.HasPrefix(et, `"`) {
		h.Set("Etag", "W/"+et)
	}
}

// commit ends a pending response's wait: it sends the status held back,
// compressed or not, and the bytes held.
func (w *compressWriter) commit(compress bool) error {
	w.pending = false
	h := w.ResponseWriter.Header()
	if compress {
		w.start(h)
	} else {
		h.Set("Content-Length", strconv.Itoa(len(w.held)))
	}
	w.ResponseWriter.WriteHeader(w.code)
	held := w.held
	w.held = nil
	if len(held) == 0 {
		return nil
	}
	_, err := w.Write(held)
	return err
}

func (w *compressWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		h := w.ResponseWriter.Header()
		if _, ok := h["Content-Type"]; !ok {
			h.Set("Content-Type", http.DetectContentType(p)) // as net/http would
		}
		w.WriteHeader(http.StatusOK)
	}
	if w.pending {
		if int64(len(w.held)+len(p)) < w.minLength {
			if w.held == nil {
				w.held = make([]byte, 0, w.minLength)
			}
			w.held = append(w.held, p...)
			return len(p), nil
		}
		if err := w.commit(true); err != nil {
			return 0, err
		}
	}
	if w.enc == nil {
		return w.ResponseWriter.Write(p)
	}
	return w.enc.Write(p)
}

// FlushError writes what the encoder holds and flushes the response, as
// http.ResponseController.Flush does.
func (w *compressWriter) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.pending {
		// A flush before minLength bytes: a stream, worth compressing.
		if err := w.commit(true); err != nil {
			return err
		}
	}
	if w.enc != nil {
		if err := w.enc.Flush(); err != nil {
			return err
		}
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Flush implements http.Flusher.
func (w *compressWriter) Flush() { _ = w.FlushError() }

// errHijackCompressed refuses to hand over a connection with a compressed
// body under way.
var errHijackCompressed = errors.New("httpproxy: hijacking a compressed response")

// Hijack takes over the connection; upgrades are not compressed, so the
// encoder is only in the way of a handler that hijacks mid-body.
func (w *compressWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.enc != nil || w.pending {
		return nil, nil, errHijackCompressed
	}
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// Unwrap gives http.ResponseController the writer underneath.
func (w *compressWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

var (
	_ http.Flusher  = (*compressWriter)(nil)
	_ http.Hijacker = (*compressWriter)(nil)
)

// close ends the compressed stream, if any, and returns its encoder to the
// pool. The stream's last bytes go out before the handler returns.
func (w *compressWriter) close() {
	if w.pending {
		// Too short to compress: sent as it is. An error means the client
		// went away.
		_ = w.commit(false)
	}
	if w.enc == nil {
		return
	}
	// An error means the client went away; the encoder is reset on reuse.
	_ = w.enc.Close()
	w.enc.Reset(nil)
	switch e := w.enc.(type) {
	case *gzip.Writer:
		gzipPool.Put(e)
	case *zstd.Encoder:
		zstdPool.Put(e)
	}
	w.enc = nil
}

// bodyAllowed reports whether a response with status code has a body.
func bodyAllowed(code int) bool {
	return code >= 200 && code != http.StatusNoContent && code != http.StatusNotModified
}

// addVary adds name to h's Vary unless it is there already or Vary is "*".
func addVary(h http.Header, name string) {
	if hasToken(h["Vary"], name) || hasToken(h["Vary"], "*") {
		return
	}
	h.Add("Vary", name)
}

// compressibleTypes are media types worth compressing beyond text/*,
// "+json" and "+xml".
var compressibleTypes = map[string]bool{
	"application/javascript":        true,
	"application/ecmascript":        true,
	"application/x-javascript":      true,
	"application/json":              true,
	"application/x-ndjson":          true,
	"application/xml":               true,
	"application/wasm":              true,
	"application/yaml":              true,
	"application/toml":              true,
	"application/x-yaml":            true,
	"application/graphql":           true,
	"application/vnd.ms-fontobject": true,
	"application/x-font-ttf":        true,
	"font/ttf":                      true,
	"font/otf":                      true,
	"image/svg+xml":                 true,
	"image/x-icon":                  true,
	"image/vnd.microsoft.icon":      true,
	"image/bmp":                     true,
}

// compressibleType reports whether the Content-Type ct is worth
// compressing: text, JSON, JavaScript, XML, SVG, wasm and the like, not
// images, video, archives or fonts that are compressed already (woff2).
func compressibleType(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	switch {
	case mt == "":
		return false
	case strings.HasPrefix(mt, "text/"):
		return true
	case strings.HasSuffix(mt, "+json"), strings.HasSuffix(mt, "+xml"):
		return true
	}
	return compressibleTypes[mt]
}
