// Command minproxy is the smallest reasonable Go TLS reverse proxy:
// net/http's server with a certificate from files, httputil.ReverseProxy
// with Rewrite (SetURL, SetXForwarded) and one access log line per request.
// bench/http.sh runs it beside leproxy as the floor of what Go's standard
// library costs on the same load.
//
//	minproxy -addr 127.0.0.1:8443 -cert c.pem -key k.pem -backend http://127.0.0.1:8080
package main

import (
	"flag"
	"log"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8443", "HTTPS `host:port` to listen on")
	cert := flag.String("cert", "", "certificate PEM `file`")
	key := flag.String("key", "", "private key PEM `file`")
	backend := flag.String("backend", "http://127.0.0.1:8080", "backend `URL`")
	accessLog := flag.Bool("access-log", true, "log one line per request to stderr")
	pool := flag.Int("pool", 64, "idle backend connections to keep")
	flag.Parse()
	target, err := url.Parse(*backend)
	if err != nil {
		log.Fatalf("minproxy: -backend: %v", err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
			pr.Out.Host = pr.In.Host
		},
		Transport: &http.Transport{MaxIdleConnsPerHost: *pool, IdleConnTimeout: 90 * time.Second},
	}
	h := http.Handler(rp)
	if *accessLog {
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			rp.ServeHTTP(w, r)
			logger.Info("request", "host", r.Host, "method", r.Method, "path", r.URL.Path,
				"duration", time.Since(start), "client", r.RemoteAddr)
		})
	}
	srv := &http.Server{Addr: *addr, Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	log.Fatal(srv.ListenAndServeTLS(*cert, *key))
}
