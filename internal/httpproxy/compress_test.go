package httpproxy

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/klauspost/compress/zstd"

	"github.com/leproxy/leproxy/internal/config"
	"github.com/leproxy/leproxy/internal/testenv"
)

// page is a compressible body, well over the minimum length.
var page = strings.Repeat("<p>leproxy compresses text, not images.</p>\n", 100)

// compressBackend answers /text (HTML), /json (short JSON), /png (an
// "image"), /br (already encoded), /stream (text of unknown length),
// /notransform, /etag and /file (http.ServeContent, so Range works).
func compressBackend() http.Handler {
	mux := http.NewServeMux()
	text := func(ct string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", ct)
			w.Header().Set("Content-Length", fmt.Sprint(len(page)))
			io.WriteString(w, page)
		}
	}
	mux.Handle("/text", text("text/html; charset=utf-8"))
	mux.Handle("/svg", text("image/svg+xml"))
	mux.Handle("/wasm", text("application/wasm"))
	mux.Handle("/png", text("image/png"))
	mux.Handle("/octet", text("application/octet-stream"))
	mux.HandleFunc("/json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "11")
		io.WriteString(w, `{"ok":true}`)
	})
	mux.HandleFunc("/br", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("Content-Encoding", "br")
		io.WriteString(w, page) // not really brotli: it must pass untouched
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		for range 4 {
			io.WriteString(w, page[:len(page)/4])
			http.NewResponseController(w).Flush()
		}
	})
	mux.HandleFunc("/notransform", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-transform")
		text("text/html")(w, r)
	})
	mux.HandleFunc("/etag", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Etag", `"v1"`)
		text("text/css")(w, r)
	})
	mux.HandleFunc("/file", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader(page))
	})
	return mux
}

// decode undoes the Content-Encoding coding of body.
func decode(t *testing.T, coding string, body []byte) string {
	t.Helper()
	var r io.Reader
	switch coding {
	case "":
		return string(body)
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatalf("gzip: %v", err)
		}
		r = zr
	case "zstd":
		zr, err := zstd.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatalf("zstd: %v", err)
		}
		defer zr.Close()
		r = zr
	default:
		return string(body) // passed through untouched
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("decoding %s: %v", coding, err)
	}
	return string(out)
}

// compressProxy serves compressBackend behind the compress middleware
// (zstd and gzip, 512 bytes at least) and returns its server and client.
func compressProxy(t *testing.T, h2 bool) (string, *http.Client, []byte) {
	t.Helper()
	srv := startBackend(t, compressBackend())
	m := &config.Middleware{Compress: &config.Compress{Encodings: config.DefaultEncodings, MinLength: config.DefaultCompressMinLength}}
	h := mustNew(t, []config.Host{mwHost("a.example.test", addrOf(srv.Listener.Addr().String()), m)}, Options{})
	proxy, c := serve(t, h, false, h2)
	return proxy.URL, c, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: proxy.Certificate().Raw})
}

func TestCompress(t *testing.T) {
	_, c, _ := compressProxy(t, false)
	c.Transport.(*http.Transport).DisableCompression = true // see the raw coding
	for _, tc := range []struct {
		name, path, method, ae, rangeHdr string
		coding                           string // Content-Encoding wanted
		vary                             bool
		status                           int
	}{
		{"gzip", "/text", "GET", "gzip", "", "gzip", true, 200},
		{"zstd", "/text", "GET", "zstd", "", "zstd", true, 200},
		{"curl order picks zstd", "/text", "GET", "deflate, gzip, br, zstd", "", "zstd", true, 200},
		{"q-values pick gzip", "/text", "GET", "zstd;q=0.5, gzip", "", "gzip", true, 200},
		{"nothing acceptable", "/text", "GET", "br, zstd;q=0", "", "", true, 200},
		{"no Accept-Encoding", "/text", "GET", "", "", "", true, 200},
		{"svg", "/svg", "GET", "gzip", "", "gzip", true, 200},
		{"wasm", "/wasm", "GET", "gzip", "", "gzip", true, 200},
		{"image skipped", "/png", "GET", "gzip", "", "", false, 200},
		{"octet-stream skipped", "/octet", "GET", "gzip", "", "", false, 200},
		{"small body skipped", "/json", "GET", "gzip", "", "", true, 200},
		{"already encoded", "/br", "GET", "gzip, br", "", "br", false, 200},
		{"unknown length", "/stream", "GET", "gzip", "", "gzip", true, 200},
		{"no-transform", "/notransform", "GET", "gzip", "", "", true, 200},
		{"range skipped", "/file", "GET", "gzip", "bytes=0-9", "", false, 206},
		{"HEAD skipped", "/text", "HEAD", "gzip", "", "", false, 200},
		{"file compressed without range", "/file", "GET", "zstd", "", "zstd", true, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, "https://a.example.test"+tc.path, nil)
			if tc.ae != "" {
				req.Header.Set("Accept-Encoding", tc.ae)
			}
			if tc.rangeHdr != "" {
				req.Header.Set("Range", tc.rangeHdr)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			ce := resp.Header.Get("Content-Encoding")
			if resp.StatusCode != tc.status || ce != tc.coding {
				t.Fatalf("got %d with Content-Encoding %q, want %d with %q", resp.StatusCode, ce, tc.status, tc.coding)
			}
			if vary := hasToken(resp.Header["Vary"], "Accept-Encoding"); vary != tc.vary {
				t.Errorf("Vary: Accept-Encoding %t, want %t (Vary %q)", vary, tc.vary, resp.Header["Vary"])
			}
			if ce == "gzip" || ce == "zstd" {
				if resp.Header.Get("Content-Length") != "" || resp.Header.Get("Accept-Ranges") != "" {
					t.Errorf("compressed response keeps Content-Length %q / Accept-Ranges %q",
						resp.Header.Get("Content-Length"), resp.Header.Get("Accept-Ranges"))
				}
				if len(raw) >= len(page)/2 {
					t.Errorf("compressed body is %d bytes for %d", len(raw), len(page))
				}
			}
			body := decode(t, ce, raw)
			switch {
			case tc.method == "HEAD":
				if body != "" {
					t.Errorf("HEAD got a body")
				}
			case tc.status == 206:
				if body != page[:10] {
					t.Errorf("range got %q, want %q", body, page[:10])
				}
			case tc.path == "/json":
				if body != `{"ok":true}` {
					t.Errorf("got %q", body)
				}
			case body != page:
				t.Errorf("decoded body differs (%d bytes, want %d)", len(body), len(page))
			}
		})
	}

	// A strong ETag becomes weak when the body is compressed.
	req, _ := http.NewRequest(http.MethodGet, "https://a.example.test/etag", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Etag"); got != `W/"v1"` {
		t.Errorf("ETag = %q, want W/\"v1\"", got)
	}
}

// TestCompressGoTransport uses Go's transport as it comes: it asks for
// gzip by itself and decompresses transparently.
func TestCompressGoTransport(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(protoName(h2), func(t *testing.T) {
			_, c, _ := compressProxy(t, h2)
			for _, tc := range []struct {
				path       string
				compressed bool
			}{{"/text", true}, {"/stream", true}, {"/png", false}, {"/json", false}} {
				resp, err := c.Get("https://a.example.test" + tc.path)
				if err != nil {
					t.Fatal(err)
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					t.Fatalf("%s: %v", tc.path, err)
				}
				if resp.Uncompressed != tc.compressed {
					t.Errorf("%s: transport decompressed: %t, want %t", tc.path, resp.Uncompressed, tc.compressed)
				}
				if want := page; tc.path != "/json" && string(body) != want {
					t.Errorf("%s: body differs (%d bytes)", tc.path, len(body))
				}
			}
		})
	}
}

// TestCompressCurl fetches through the proxy with curl --compressed over
// HTTP/2 and HTTP/1.1: text arrives compressed and intact, images and
// ranges uncompressed.
func TestCompressCurl(t *testing.T) {
	curl := testenv.LookBinary(t, "curl", "curl")
	for _, proto := range []string{"--http1.1", "--http2"} {
		t.Run(proto, func(t *testing.T) {
			url, _, certPEM := compressProxy(t, proto == "--http2")
			dir := t.TempDir()
			ca := filepath.Join(dir, "ca.pem")
			if err := os.WriteFile(ca, certPEM, 0o600); err != nil {
				t.Fatal(err)
			}
			for _, tc := range []struct {
				name   string
				args   []string
				coding string
				want   string
			}{
				{"text", []string{"/text"}, "zstd", page},
				{"text gzip only", []string{"/text", "-H", "Accept-Encoding: gzip"}, "gzip", page},
				{"image", []string{"/png"}, "", page},
				{"range", []string{"/file", "-r", "0-9"}, "", page[:10]},
			} {
				t.Run(tc.name, func(t *testing.T) {
					headers := filepath.Join(dir, "headers")
					args := append([]string{"-sS", "--fail", proto, "--compressed", "--cacert", ca,
						"-H", "Host: a.example.test", "-D", headers, "--max-time", "30", url + tc.args[0]}, tc.args[1:]...)
					ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
					defer cancel()
					out, err := exec.CommandContext(ctx, curl, args...).Output()
					if err != nil {
						t.Fatalf("curl %v: %v", args, err)
					}
					hdr, err := os.ReadFile(headers)
					if err != nil {
						t.Fatal(err)
					}
					wantStatus := "HTTP/1.1 200"
					switch {
					case proto == "--http2" && tc.name == "range":
						wantStatus = "HTTP/2 206"
					case proto == "--http2":
						wantStatus = "HTTP/2 200"
					case tc.name == "range":
						wantStatus = "HTTP/1.1 206"
					}
					if !strings.HasPrefix(string(hdr), wantStatus) {
						t.Errorf("status line %q, want %q", strings.SplitN(string(hdr), "\r\n", 2)[0], wantStatus)
					}
					coding := ""
					for line := range strings.Lines(string(hdr)) {
						if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "content-encoding") {
							coding = strings.TrimSpace(v)
						}
					}
					if coding != tc.coding {
						t.Errorf("Content-Encoding %q, want %q; headers:\n%s", coding, tc.coding, hdr)
					}
					if string(out) != tc.want {
						t.Errorf("curl got %d bytes, want %d", len(out), len(tc.want))
					}
				})
			}
		})
	}
}

// TestCompressStreaming checks that a compressed event stream still
// arrives event by event: the backend blocks after its first event until
// the client has read it, decompressed.
func TestCompressStreaming(t *testing.T) {
	const first, second = "data: one\n\n", "data: two\n\n"
	for _, h2 := range []bool{false, true} {
		t.Run(protoName(h2), func(t *testing.T) {
			release := make(chan struct{})
			srv := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				io.WriteString(w, first)
				http.NewResponseController(w).Flush()
				select {
				case <-release:
				case <-r.Context().Done():
					return
				}
				io.WriteString(w, second)
			}))
			var once sync.Once
			unblock := func() { once.Do(func() { close(release) }) }
			t.Cleanup(unblock)
			m := &config.Middleware{Compress: &config.Compress{Encodings: []string{"gzip"}, MinLength: 512}}
			h := mustNew(t, []config.Host{mwHost("a.example.test", addrOf(srv.Listener.Addr().String()), m)}, Options{})
			_, c := serve(t, h, false, h2)
			resp, err := c.Get("https://a.example.test/events")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if !resp.Uncompressed {
				t.Fatalf("stream not compressed")
			}
			buf := make([]byte, len(first))
			if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != first {
				t.Fatalf("first event: %q, %v", buf, err)
			}
			unblock()
			rest, err := io.ReadAll(resp.Body)
			if err != nil || string(rest) != second {
				t.Errorf("rest: %q, %v; want %q", rest, err, second)
			}
		})
	}
}

// TestCompressWebsocket checks that a websocket passes the compress and
// response header middleware untouched.
func TestCompressWebsocket(t *testing.T) {
	srv := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		typ, msg, err := c.Read(r.Context())
		if err != nil {
			return
		}
		c.Write(r.Context(), typ, append([]byte("echo "), msg...))
	}))
	m := &config.Middleware{
		Compress:        &config.Compress{Encodings: config.DefaultEncodings, MinLength: 0},
		ResponseHeaders: config.HeaderOps{Set: []config.HeaderField{{Name: "X-Frame-Options", Value: "DENY"}}},
	}
	h := mustNew(t, []config.Host{mwHost("ws.example.test", addrOf(srv.Listener.Addr().String()), m)}, Options{})
	_, client := serve(t, h, false, false)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "wss://ws.example.test/socket", &websocket.DialOptions{HTTPClient: client})
	if err != nil {
		t.Fatalf("dialing through the proxy: %v", err)
	}
	defer c.CloseNow()
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Content-Encoding") != "" {
		t.Errorf("got %d with Content-Encoding %q", resp.StatusCode, resp.Header.Get("Content-Encoding"))
	}
	if err := c.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, got, err := c.Read(ctx); err != nil || string(got) != "echo hi" {
		t.Errorf("got %q, %v", got, err)
	}
}

func TestCompressibleType(t *testing.T) {
	for ct, want := range map[string]bool{
		"text/html; charset=utf-8": true, "TEXT/CSS": true, "application/json": true,
		"application/ld+json": true, "application/atom+xml": true, "image/svg+xml": true,
		"application/javascript": true, "application/wasm": true, "text/event-stream": true,
		"image/png": false, "image/jpeg": false, "video/mp4": false, "application/zip": false,
		"font/woff2": false, "application/octet-stream": false, "": false, "application/gzip": false,
	} {
		if got := compressibleType(ct); got != want {
			t.Errorf("compressibleType(%q) = %t, want %t", ct, got, want)
		}
	}
}

// TestCompressBackendFailsMidBody checks that a compressed response whose
// backend breaks off mid-body reaches the client broken, not as a
// complete compressed stream that would pass for the whole body.
func TestCompressBackendFailsMidBody(t *testing.T) {
	for _, size := range []int{10, 2000} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			srv := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/plain")
				io.WriteString(w, page[:size])
				http.NewResponseController(w).Flush()
				if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
					conn.Close() // no last chunk
				}
			}))
			m := &config.Middleware{Compress: &config.Compress{Encodings: []string{"gzip"}, MinLength: 512}}
			h := mustNew(t, []config.Host{mwHost("a.example.test", addrOf(srv.Listener.Addr().String()), m)}, Options{})
			_, c := serve(t, h, false, false)
			resp, err := c.Get("https://a.example.test/")
			if err != nil {
				t.Fatalf("GET: %v", err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil {
				t.Errorf("got a complete body of %d bytes (compressed: %t), want a read error", len(body), resp.Uncompressed)
			}
		})
	}
}

// TestCompressHeldBack checks the short responses of unknown length that
// never flush (refusals, error pages): sent uncompressed with their
// length, while a long one is compressed.
func TestCompressHeldBack(t *testing.T) {
	m := &config.Middleware{Compress: &config.Compress{Encodings: []string{"gzip"}, MinLength: 512}}
	h, err := withMiddleware(m, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		n := len(r.URL.Path) * 100 // "/" short, "/long" 500 bytes, "/longer" 700
		for range 10 {
			io.WriteString(w, page[:n/10])
		}
	}), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path   string
		coding string
		length string
	}{{"/", "", "100"}, {"/long", "", "500"}, {"/longer", "gzip", ""}} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, tc.path, nil)
		req.Header.Set("Accept-Encoding", "gzip")
		h.ServeHTTP(rec, req)
		res := rec.Result()
		if ce, cl := res.Header.Get("Content-Encoding"), res.Header.Get("Content-Length"); ce != tc.coding || cl != tc.length {
			t.Errorf("%s: Content-Encoding %q, Content-Length %q; want %q, %q", tc.path, ce, cl, tc.coding, tc.length)
		}
		if got := decode(t, tc.coding, rec.Body.Bytes()); got != strings.Repeat(page[:len(tc.path)*10], 10) {
			t.Errorf("%s: body differs", tc.path)
		}
	}
}
