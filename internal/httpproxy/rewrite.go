package httpproxy

import (
	"net/http"
	"strings"

	"github.com/leproxy/leproxy/internal/config"
)

// redirects is the redirect middleware: the first rule whose From matches
// the request's path (as sent, percent-escapes kept) answers with a
// redirect to its To, the groups of the match filled in. A path target
// gets the request's query unless it has one itself, and is cleaned
// (leading slashes and backslashes folded into one, then net/http's
// Redirect), so that a group cannot turn it into a scheme-relative
// "//other.host" URL. Requests no rule matches go on.
type redirects struct {
	rules []config.Redirect
	next  http.Handler
}

func (rd redirects) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.EscapedPath()
	for i := range rd.rules {
		rule := &rd.rules[i]
		m := rule.From.FindStringSubmatchIndex(path)
		if m == nil {
			continue
		}
		target := string(rule.From.ExpandString(nil, rule.To, path, m))
		if strings.HasPrefix(target, "/") {
			// "//host" and "/\host" are URLs of another host to a browser.
			target = "/" + strings.TrimLeft(target, "/\\")
			if !strings.Contains(target, "?") && r.URL.RawQuery != "" {
				target += "?" + r.URL.RawQuery
			}
		}
		// #nosec G710 -- the target is the operator's own redirect rule; a path target is kept on this host (leading slashes folded above).
		http.Redirect(w, r, target, rule.Code)
		return
	}
	rd.next.ServeHTTP(w, r)
}

// prefixRewrite is the strip_prefix/add_prefix middleware: strip is taken
// off a path that is strip or starts with strip + "/" (other paths are
// left alone), then add is put in front of every path. The backend (or a
// URL backend's own path prefix) sees the result.
type prefixRewrite struct {
	strip, add string
	next       http.Handler
}

func (p prefixRewrite) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	stripped, stripOK := "", false
	if p.strip != "" {
		stripped, stripOK = cutPathPrefix(r.URL.Path, p.strip)
	}
	if !stripOK && p.add == "" {
		p.next.ServeHTTP(w, r)
		return
	}
	u := *r.URL // r.URL is shared with the access log, which shows the client's path
	if stripOK {
		u.Path = stripped
		if rawRest, ok := cutPathPrefix(u.RawPath, p.strip); ok {
			u.RawPath = rawRest
		} else {
			u.RawPath = "" // re-encoded from Path
		}
	}
	if p.add != "" {
		u.Path = p.add + u.Path
		if u.RawPath != "" {
			u.RawPath = p.add + u.RawPath
		}
	}
	r2 := *r
	r2.URL = &u
	p.next.ServeHTTP(w, &r2)
}

// cutPathPrefix returns path without prefix when path is prefix or
// continues it with a slash; the result always starts with a slash.
func cutPathPrefix(path, prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(path, prefix)
	switch {
	case !ok:
		return path, false
	case rest == "":
		return "/", true
	case rest[0] != '/':
		return path, false
	}
	return rest, true
}
