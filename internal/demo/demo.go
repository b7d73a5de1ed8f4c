// Package demo is leproxy's embedded default: a static site and a small
// echo backend on *.localhost names, so that running leproxy with no
// mapping shows a working HTTPS page at once.
package demo

import (
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

//go:embed www
var site embed.FS

// WriteSite writes the demo's static site into dir, replacing files of the
// same name.
func WriteSite(dir string) error {
	return fs.WalkDir(site, "www", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, strings.TrimPrefix(p, "www"))
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := site.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
}

// Mapping returns the demo mapping: www.localhost serves staticDir (which
// ends in a slash), app.localhost proxies to the echo backend at
// backendAddr.
func Mapping(staticDir, backendAddr string) []byte {
	return fmt.Appendf(nil, "# leproxy's embedded demo mapping\nwww.localhost: %s\napp.localhost: %s\n", staticDir, backendAddr)
}

// Backend returns the echo backend: a page showing the request as the
// backend received it, X-Forwarded-* headers included.
func Backend() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		names := make([]string, 0, len(r.Header))
		for k := range r.Header {
			names = append(names, k)
		}
		sort.Strings(names)
		type header struct{ Name, Value string }
		var hs []header
		for _, k := range names {
			hs = append(hs, header{k, strings.Join(r.Header[k], ", ")})
		}
		remote, _, _ := net.SplitHostPort(r.RemoteAddr)
		back := "https://www.localhost"
		if _, port, err := net.SplitHostPort(r.Header.Get("X-Forwarded-Host")); err == nil {
			back += ":" + port
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		echoPage.Execute(w, struct {
			Method, URI, Host, Proto, Remote, Back string
			Headers                                []header
		}{r.Method, r.RequestURI, r.Host, r.Proto, remote, back, hs})
	})
}

var echoPage = template.Must(template.New("echo").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>leproxy demo backend</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem}
td,th{text-align:left;padding:.2rem .8rem .2rem 0;vertical-align:top}code{font-size:90%}</style></head>
<body><h1>app.localhost: the demo backend</h1>
<p>This page comes from a plain-HTTP backend on loopback; leproxy terminated
TLS and forwarded the request. The backend saw:</p>
<table><tr><th>Request</th><td><code>{{.Method}} {{.URI}} {{.Proto}}</code></td></tr>
<tr><th>Host</th><td><code>{{.Host}}</code></td></tr>
<tr><th>From</th><td><code>{{.Remote}}</code> (leproxy)</td></tr>
{{range .Headers}}<tr><th>{{.Name}}</th><td><code>{{.Value}}</code></td></tr>
{{end}}</table>
<p>X-Forwarded-For, -Host and -Proto were set by leproxy; values a client
sends in those headers are dropped. <a href="{{.Back}}/">Back to the static site</a>.</p>
</body></html>
`))
