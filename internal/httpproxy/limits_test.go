package httpproxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/leproxy/leproxy/internal/config"
)

// limitsClient serves h like serve and returns a client that adds no
// header of its own but Host (no Accept-Encoding), so a test knows the
// exact header fields of its requests.
func limitsClient(t *testing.T, h http.Handler, h2 bool) *http.Client {
	t.Helper()
	_, c := serve(t, h, false, h2)
	c.Transport.(*http.Transport).DisableCompression = true
	return c
}

func protoName(h2 bool) string {
	if h2 {
		return "h2"
	}
	return "h1"
}

func TestURILimit(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(protoName(h2), func(t *testing.T) {
			var hits atomic.Int64
			be := startBackend(t, countingHandler(&hits, echoHandler("a")))
			c := limitsClient(t, mustNew(t, []config.Host{tcpHost("a.example.test", be)}, Options{}), h2)
			for _, tc := range []struct{ n, want int }{
				{DefaultMaxURI - 1, http.StatusOK},
				{DefaultMaxURI, http.StatusOK},
				{DefaultMaxURI + 1, http.StatusRequestURITooLong},
			} {
				before := hits.Load()
				uri := "/" + strings.Repeat("a", tc.n-1)
				resp, body := do(t, c, "https://a.example.test"+uri, nil)
				if resp.StatusCode != tc.want {
					t.Errorf("URI of %d bytes: status %d, want %d (%q)", tc.n, resp.StatusCode, tc.want, body)
				}
				if tc.want == http.StatusOK && resp.StatusCode == http.StatusOK && decodeEcho(t, body).Path != uri {
					t.Errorf("URI of %d bytes: backend saw another path", tc.n)
				}
				if reached, want := hits.Load()-before, wantHits(tc.want); reached != want {
					t.Errorf("URI of %d bytes: backend reached %d times, want %d", tc.n, reached, want)
				}
			}
		})
	}
}

// nHeaders returns n header fields: User-Agent and n-1 X-H-i.
func nHeaders(n int) http.Header {
	hdr := http.Header{"User-Agent": {"limits-test"}}
	for i := 1; i < n; i++ {
		hdr.Add("X-H-"+strconv.Itoa(i), "v")
	}
	return hdr
}

func TestHeaderCountLimit(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		for _, limit := range []int{0, 10} {
			t.Run(fmt.Sprintf("%s/limit=%d", protoName(h2), limit), func(t *testing.T) {
				var hits atomic.Int64
				be := startBackend(t, countingHandler(&hits, echoHandler("a")))
				c := limitsClient(t, mustNew(t, []config.Host{tcpHost("a.example.test", be)}, Options{MaxHeaders: limit}), h2)
				max := limit
				if max == 0 {
					max = DefaultMaxHeaders
				}
				for _, tc := range []struct{ n, want int }{
					{max - 1, http.StatusOK},
					{max, http.StatusOK},
					{max + 1, http.StatusRequestHeaderFieldsTooLarge},
				} {
					before := hits.Load()
					resp, body := do(t, c, "https://a.example.test/", nHeaders(tc.n))
					if resp.StatusCode != tc.want {
						t.Errorf("%d header fields: status %d, want %d (%q)", tc.n, resp.StatusCode, tc.want, body)
					}
					if reached, want := hits.Load()-before, wantHits(tc.want); reached != want {
						t.Errorf("%d header fields: backend reached %d times, want %d", tc.n, reached, want)
					}
				}
			})
		}
	}
}

func TestUnderscoreHeaders(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		for _, keep := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/keep=%v", protoName(h2), keep), func(t *testing.T) {
				be := startBackend(t, echoHandler("a"))
				logger, logs := newTestLogger()
				c := limitsClient(t, mustNew(t, []config.Host{tcpHost("a.example.test", be)}, Options{KeepUnderscoreHeaders: keep, Logger: logger}), h2)
				resp, body := do(t, c, "https://a.example.test/", http.Header{"X_Forwarded_For": {"6.6.6.6"}, "X-Other": {"kept"}})
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("status %d, want 200 (%q)", resp.StatusCode, body)
				}
				got := decodeEcho(t, body).Header
				var seen []string
				for k, vv := range got {
					if strings.EqualFold(k, "X_Forwarded_For") {
						seen = vv
					}
				}
				if keep != (len(seen) == 1 && seen[0] == "6.6.6.6") {
					t.Errorf("backend saw X_Forwarded_For %q, want it kept: %v", seen, keep)
				}
				if got.Get("X-Other") != "kept" {
					t.Errorf("backend saw X-Other %q, want kept", got.Get("X-Other"))
				}
				if !strings.Contains(strings.Join(got.Values("X-Forwarded-For"), ","), "127.0.0.1") || strings.Contains(strings.Join(got.Values("X-Forwarded-For"), ","), "6.6.6.6") {
					t.Errorf("backend saw X-Forwarded-For %q, want the client address only", got.Values("X-Forwarded-For"))
				}
				logged := false
				for _, rec := range logs.records(t) {
					if rec["msg"] == "dropped request header with underscore" {
						logged = true
						if rec["level"] != "DEBUG" {
							t.Errorf("drop logged at %v, want DEBUG", rec["level"])
						}
					}
				}
				if logged == keep {
					t.Errorf("drop logged: %v, want %v", logged, !keep)
				}
			})
		}
	}
}

// headerBytesServer serves h over TLS (h2 and http/1.1) from an
// http.Server with MaxHeaderBytes set to maxBytes, and returns its address.
func headerBytesServer(t *testing.T, h http.Handler, maxBytes int) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.MaxHeaderBytes = maxBytes
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func dialTLS(t *testing.T, addr, proto string) *tls.Conn {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{proto}})
	if err != nil {
		t.Fatalf("dialing %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	// httptest offers only h2 by ALPN; HTTP/1.1 is the fallback.
	if got := conn.ConnectionState().NegotiatedProtocol; got != proto && (proto != "http/1.1" || got != "") {
		t.Fatalf("negotiated %q, want %q", got, proto)
	}
	conn.SetDeadline(time.Now().Add(testTimeout))
	return conn
}

// h1HeaderBytes sends an HTTP/1.1 request whose request line and header
// (final empty line included) take exactly size bytes and returns the
// response status.
func h1HeaderBytes(t *testing.T, addr string, size int) int {
	t.Helper()
	const head = "GET / HTTP/1.1\r\nHost: a.example.test\r\nX-Pad: "
	const tail = "\r\n\r\n"
	req := head + strings.Repeat("p", size-len(head)-len(tail)) + tail
	conn := dialTLS(t, addr, "http/1.1")
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatalf("writing request: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// h2HeaderBytes sends an HTTP/2 request whose header list has exactly size
// bytes as HTTP/2 counts them (name + value + 32 per field, pseudo-headers
// included), bypassing the client-side check of the Go transport, and
// returns the response status.
func h2HeaderBytes(t *testing.T, addr string, size int) int {
	t.Helper()
	conn := dialTLS(t, addr, "h2")
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatalf("writing preface: %v", err)
	}
	fr := http2.NewFramer(conn, conn)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := fr.WriteSettings(); err != nil {
		t.Fatalf("writing settings: %v", err)
	}
	fields := []hpack.HeaderField{
		{Name: ":method", Value: "GET"},
		{Name: ":scheme", Value: "https"},
		{Name: ":authority", Value: "a.example.test"},
		{Name: ":path", Value: "/"},
	}
	pad := hpack.HeaderField{Name: "x-pad"}
	used := pad.Size()
	for _, f := range fields {
		used += f.Size()
	}
	pad.Value = strings.Repeat("p", size-int(used))
	fields = append(fields, pad)
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range fields {
		if err := enc.WriteField(f); err != nil {
			t.Fatalf("encoding header: %v", err)
		}
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatalf("writing headers: %v", err)
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading frames: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				if err := fr.WriteSettingsAck(); err != nil {
					t.Fatalf("writing settings ack: %v", err)
				}
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID == 1 {
				st, err := strconv.Atoi(f.PseudoValue("status"))
				if err != nil {
					t.Fatalf("bad :status %q", f.PseudoValue("status"))
				}
				return st
			}
		case *http2.RSTStreamFrame:
			t.Fatalf("stream reset: %v", f.ErrCode)
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY: %v", f.ErrCode)
		}
	}
}

func TestHeaderBytesLimit(t *testing.T) {
	const maxBytes = 4096
	var hits atomic.Int64
	be := startBackend(t, countingHandler(&hits, echoHandler("a")))
	addr := headerBytesServer(t, mustNew(t, []config.Host{tcpHost("a.example.test", be)}, Options{}), maxBytes)
	tests := []struct {
		proto string
		// limit is what Go really allows: HTTP/1.1 reads up to
		// MaxHeaderBytes plus 4096 bytes of bufio slop; HTTP/2 advertises
		// and enforces MaxHeaderBytes plus 10×32 bytes of per-field
		// overhead as SETTINGS_MAX_HEADER_LIST_SIZE.
		limit int
		send  func(*testing.T, string, int) int
	}{
		{"h1", maxBytes + 4096, h1HeaderBytes},
		{"h2", maxBytes + 320, h2HeaderBytes},
	}
	for _, tc := range tests {
		t.Run(tc.proto, func(t *testing.T) {
			for _, c := range []struct{ size, want int }{
				{tc.limit - 1, http.StatusOK},
				{tc.limit, http.StatusOK},
				{tc.limit + 1, http.StatusRequestHeaderFieldsTooLarge},
			} {
				before := hits.Load()
				if got := tc.send(t, addr, c.size); got != c.want {
					t.Errorf("%d header bytes: status %d, want %d", c.size, got, c.want)
				}
				if reached, want := hits.Load()-before, wantHits(c.want); reached != want {
					t.Errorf("%d header bytes: backend reached %d times, want %d", c.size, reached, want)
				}
			}
		})
	}
}

// wantHits is how many times a request answered with status reaches the
// backend: once when it was served, never when it was refused.
func wantHits(status int) int64 {
	if status == http.StatusOK {
		return 1
	}
	return 0
}
