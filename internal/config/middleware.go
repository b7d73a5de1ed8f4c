package config

import (
	"fmt"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/leproxy/leproxy/internal/bytesize"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/net/http/httpguts"
	"gopkg.in/yaml.v3"
)

// Middleware is the middleware stack of one HTTP host (long form key
// "middleware"). Every field's zero value turns its middleware off. The
// order in which they apply is fixed, not that of the file; see the
// README and httpproxy.
type Middleware struct {
	// Allow and Deny are the client networks let in and kept out
	// ("ip_allow", "ip_deny"); a bare address is a /32 or /128. Deny
	// wins; a non-empty Allow refuses everything it does not hold.
	Allow, Deny []netip.Prefix
	// BasicAuth asks for a user name and password ("basic_auth"); nil is
	// off.
	BasicAuth *BasicAuth
	// MaxBody is the largest request body in bytes ("max_body"); 0 is no
	// limit.
	MaxBody int64
	// Redirects are tried in order on the request path ("redirect"); the
	// first that matches answers.
	Redirects []Redirect
	// StripPrefix is taken off the front of matching request paths, then
	// AddPrefix put on every path ("strip_prefix", "add_prefix").
	StripPrefix, AddPrefix string
	// RequestHeaders change the request before the backend sees it,
	// ResponseHeaders every response of the host ("request_headers",
	// "response_headers").
	RequestHeaders, ResponseHeaders HeaderOps
	// Compress compresses responses ("compress"); nil is off.
	Compress *Compress
	Line     int // line of the "middleware" key in File
}

// notes describes the middlewares m turns on, in the order they apply,
// for Summary.
func (m *Middleware) notes() []string {
	var notes []string
	if len(m.Allow) > 0 || len(m.Deny) > 0 {
		notes = append(notes, fmt.Sprintf("IP filter (%d allowed, %d denied networks)", len(m.Allow), len(m.Deny)))
	}
	if m.BasicAuth != nil {
		notes = append(notes, fmt.Sprintf("basic auth (%d users)", len(m.BasicAuth.Users)))
	}
	if m.MaxBody > 0 {
		notes = append(notes, fmt.Sprintf("max_body %d bytes", m.MaxBody))
	}
	if len(m.Redirects) > 0 {
		notes = append(notes, fmt.Sprintf("%d redirects", len(m.Redirects)))
	}
	if m.StripPrefix != "" {
		notes = append(notes, "strip_prefix "+m.StripPrefix)
	}
	if m.AddPrefix != "" {
		notes = append(notes, "add_prefix "+m.AddPrefix)
	}
	if !m.RequestHeaders.Empty() {
		notes = append(notes, "request headers")
	}
	if !m.ResponseHeaders.Empty() {
		notes = append(notes, "response headers")
	}
	if m.Compress != nil {
		notes = append(notes, "compress "+strings.Join(m.Compress.Encodings, "/"))
	}
	return notes
}

// BasicAuth is HTTP basic authentication against bcrypt hashes.
type BasicAuth struct {
	Realm string // shown by browsers; "restricted" when not set
	// Users maps user names to bcrypt hashes ("$2a$", "$2b$" or "$2y$").
	Users map[string][]byte
	// PassAuthorization sends the client's Authorization header on to the
	// backend ("pass_authorization: true"); by default it is removed.
	PassAuthorization bool
}

// Redirect answers requests whose path matches From with a redirect to To,
// in which $1, ${1} and ${name} stand for From's groups.
type Redirect struct {
	From *regexp.Regexp
	To   string
	Code int // 301, 302 (default), 303, 307 or 308
	Line int
}

// HeaderOps are header changes, applied in the order Remove, Set, Add.
// Names are in canonical form.
type HeaderOps struct {
	Remove []string
	Set    []HeaderField
	Add    []HeaderField
}

// Empty reports whether ops changes nothing.
func (ops HeaderOps) Empty() bool {
	return len(ops.Remove) == 0 && len(ops.Set) == 0 && len(ops.Add) == 0
}

// HeaderField is one header name and value.
type HeaderField struct{ Name, Value string }

// Compress says how responses are compressed.
type Compress struct {
	// Encodings are "zstd" and "gzip", in the order preferred when the
	// client likes them equally.
	Encodings []string
	// MinLength is the smallest body, by its Content-Length, that is
	// compressed; bodies of unknown length always are.
	MinLength int64
}

// Defaults of Compress.
const (
	DefaultCompressMinLength = 512
	DefaultBasicAuthRealm    = "restricted"
)

// DefaultEncodings are the encodings of "compress: true".
var DefaultEncodings = []string{"zstd", "gzip"}

// middlewareKeys are the known keys of "middleware", in the order they
// apply.
var middlewareKeys = []string{
	"ip_allow", "ip_deny", "basic_auth", "max_body", "redirect",
	"strip_prefix", "add_prefix", "request_headers", "response_headers", "compress",
}

// reservedHeaders may not be changed by request_headers or
// response_headers: they frame the message or route it.
var reservedHeaders = []string{
	"Host", "Content-Length", "Transfer-Encoding", "Connection", "Upgrade",
	"Keep-Alive", "Proxy-Connection", "Te", "Trailer",
}

// forwardingHeaders are set by leproxy itself on every proxied request,
// so request_headers cannot change them.
var forwardingHeaders = []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-Ip"}

// middleware walks a host's "middleware" mapping n; path is its key.
func (l *loader) middleware(n *yaml.Node, path string) *Middleware {
	if isNull(n) {
		return nil
	}
	if !l.is(n, path, yaml.MappingNode, "a mapping of middleware names to settings") {
		return nil
	}
	m := &Middleware{Line: n.Line}
	f := l.fields(n, path, middlewareKeys...)
	if v := f["ip_allow"]; v != nil {
		m.Allow = l.prefixes(v, path+".ip_allow")
	}
	if v := f["ip_deny"]; v != nil {
		m.Deny = l.prefixes(v, path+".ip_deny")
	}
	if v := f["basic_auth"]; v != nil {
		m.BasicAuth = l.basicAuth(v, path+".basic_auth")
	}
	if v := f["max_body"]; v != nil {
		m.MaxBody = l.size(v, path+".max_body")
	}
	if v := f["redirect"]; v != nil {
		m.Redirects = l.redirects(v, path+".redirect")
	}
	if v := f["strip_prefix"]; v != nil {
		m.StripPrefix = l.pathPrefix(v, path+".strip_prefix")
	}
	if v := f["add_prefix"]; v != nil {
		m.AddPrefix = l.pathPrefix(v, path+".add_prefix")
	}
	if v := f["request_headers"]; v != nil {
		m.RequestHeaders = l.headerOps(v, path+".request_headers", forwardingHeaders)
	}
	if v := f["response_headers"]; v != nil {
		m.ResponseHeaders = l.headerOps(v, path+".response_headers", nil)
	}
	if v := f["compress"]; v != nil {
		m.Compress = l.compress(v, path+".compress")
	}
	return m
}

// stringList returns the scalar or list of scalars n; a lone scalar is a
// list of one.
func (l *loader) stringList(n *yaml.Node, key, what string) ([]string, []*yaml.Node) {
	if n.Kind == yaml.ScalarNode && !isNull(n) {
		return []string{n.Value}, []*yaml.Node{n}
	}
	if !l.is(n, key, yaml.SequenceNode, "a list of "+what) {
		return nil, nil
	}
	var out []string
	var nodes []*yaml.Node
	for i, item := range n.Content {
		if s, ok := l.string(item, fmt.Sprintf("%s[%d]", key, i), what); ok {
			out = append(out, s)
			nodes = append(nodes, item)
		}
	}
	return out, nodes
}

// prefixes parses a list of CIDR networks or addresses.
func (l *loader) prefixes(n *yaml.Node, key string) []netip.Prefix {
	vals, nodes := l.stringList(n, key, "networks (CIDR) or addresses")
	var out []netip.Prefix
	for i, s := range vals {
		p, err := parsePrefix(s)
		if err != nil {
			l.el.add(nodes[i].Line, key, s, fmt.Sprintf("invalid network %q: %v", s, err))
			continue
		}
		out = append(out, p)
	}
	if n.Kind == yaml.SequenceNode && len(n.Content) == 0 {
		l.el.add(n.Line, key, "", "empty list; remove the key or list networks")
	}
	return out
}

// parsePrefix parses "10.0.0.0/8" or "192.0.2.7". Host bits set in a
// network ("10.0.0.1/8") are refused as a likely typo. IPv4-mapped IPv6
// addresses are taken as IPv4.
func parsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("not an IP address or network")
		}
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("zones are not allowed")
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("not a network in CIDR form (like 10.0.0.0/8)")
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("host bits set; did you mean %s?", p.Masked())
	}
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p, nil
}

// basicAuth walks "basic_auth".
func (l *loader) basicAuth(n *yaml.Node, key string) *BasicAuth {
	if !l.is(n, key, yaml.MappingNode, "a mapping with users (and realm, pass_authorization)") {
		return nil
	}
	f := l.fields(n, key, "realm", "users", "pass_authorization")
	ba := &BasicAuth{Realm: DefaultBasicAuthRealm, Users: make(map[string][]byte)}
	if v := f["realm"]; v != nil {
		if s, ok := l.string(v, key+".realm", "a realm name"); ok {
			if s == "" || strings.ContainsAny(s, "\"\\") || !httpguts.ValidHeaderFieldValue(s) {
				l.el.add(v.Line, key+".realm", s, fmt.Sprintf("invalid realm %q: want non-empty text without quotes or backslashes", s))
			} else {
				ba.Realm = s
			}
		}
	}
	if v := f["pass_authorization"]; v != nil {
		ba.PassAuthorization, _ = l.bool(v, key+".pass_authorization")
	}
	users := f["users"]
	if users == nil {
		l.el.add(n.Line, key, "", `missing key "users"`)
		return ba
	}
	if !l.is(users, key+".users", yaml.MappingNode, "a mapping of user names to bcrypt hashes") {
		return ba
	}
	ukey := key + ".users"
	for i := 0; i+1 < len(users.Content); i += 2 {
		k, v := users.Content[i], users.Content[i+1]
		if !l.is(k, ukey, yaml.ScalarNode, "a user name") {
			continue
		}
		name := k.Value
		switch {
		case name == "" || strings.Contains(name, ":") || !httpguts.ValidHeaderFieldValue(name):
			l.el.add(k.Line, ukey, name, fmt.Sprintf("invalid user name %q: want non-empty text without a colon", name))
			continue
		case ba.Users[name] != nil:
			l.el.add(k.Line, ukey, name, fmt.Sprintf("duplicate user %q", name))
			continue
		}
		hash, ok := l.string(v, ukey+"."+name, "a bcrypt hash")
		if !ok {
			continue
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil || !strings.HasPrefix(hash, "$2") {
			// The value is not echoed: it may be a plaintext password.
			l.el.add(v.Line, ukey+"."+name, "", "not a bcrypt hash (plaintext passwords are refused); make one with: htpasswd -nB "+name)
			continue
		}
		ba.Users[name] = []byte(hash)
	}
	if len(ba.Users) == 0 && len(users.Content) == 0 {
		l.el.add(users.Line, ukey, "", "no users; nobody could log in")
	}
	return ba
}

// size parses a byte count: an integer, or one with a unit (KB, MB, GB
// are powers of 1000, KiB, MiB, GiB of 1024).
func (l *loader) size(n *yaml.Node, key string) int64 {
	s, ok := l.string(n, key, "a size in bytes")
	if !ok {
		return 0
	}
	v, err := bytesize.Parse(s)
	if err != nil {
		l.el.add(n.Line, key, s, fmt.Sprintf("invalid size %q: %v", s, err))
		return 0
	}
	return v
}

// redirectCodes are the statuses a redirect may answer with.
var redirectCodes = []int{301, 302, 303, 307, 308}

// redirects walks "redirect": one mapping or a list of them.
func (l *loader) redirects(n *yaml.Node, key string) []Redirect {
	items := []*yaml.Node{n}
	if n.Kind == yaml.SequenceNode {
		items = n.Content
	}
	var out []Redirect
	for i, item := range items {
		ikey := key
		if n.Kind == yaml.SequenceNode {
			ikey = fmt.Sprintf("%s[%d]", key, i)
		}
		if !l.is(item, ikey, yaml.MappingNode, "a redirect (a mapping with from, to and code)") {
			continue
		}
		if r, ok := l.redirect(item, ikey); ok {
			out = append(out, r)
		}
	}
	return out
}

// redirect walks one redirect.
func (l *loader) redirect(n *yaml.Node, key string) (Redirect, bool) {
	r := Redirect{Code: http.StatusFound, Line: n.Line}
	f := l.fields(n, key, "from", "to", "code")
	ok := true
	for _, req := range []string{"from", "to"} {
		if f[req] == nil {
			l.el.add(n.Line, key, "", fmt.Sprintf("missing key %q", req))
			ok = false
		}
	}
	if v := f["from"]; v != nil {
		if s, sok := l.string(v, key+".from", "a regular expression"); sok {
			re, err := regexp.Compile(s)
			switch {
			case err != nil:
				l.el.add(v.Line, key+".from", s, fmt.Sprintf("invalid regular expression %q: %v", s, err))
				ok = false
			case s == "":
				l.el.add(v.Line, key+".from", "", "empty regular expression")
				ok = false
			default:
				r.From = re
			}
		} else {
			ok = false
		}
	}
	if v := f["to"]; v != nil {
		s, sok := l.string(v, key+".to", "a path or URL")
		switch {
		case !sok:
			ok = false
		case !strings.HasPrefix(s, "/") && !strings.HasPrefix(s, "https://") && !strings.HasPrefix(s, "http://"):
			l.el.add(v.Line, key+".to", s, fmt.Sprintf("invalid target %q: want a path starting with / or an http(s):// URL", s))
			ok = false
		case !httpguts.ValidHeaderFieldValue(s) || strings.ContainsAny(s, " \t"):
			l.el.add(v.Line, key+".to", s, fmt.Sprintf("invalid target %q: spaces or control characters", s))
			ok = false
		default:
			r.To = s
			if r.From != nil {
				if msg := checkExpand(r.From, s); msg != "" {
					l.el.add(v.Line, key+".to", s, msg)
					ok = false
				}
			}
		}
	}
	if v := f["code"]; v != nil {
		s, sok := l.string(v, key+".code", "a redirect status")
		c, err := strconv.Atoi(s)
		switch {
		case !sok:
			ok = false
		case err != nil || !slices.Contains(redirectCodes, c):
			l.el.add(v.Line, key+".code", s, fmt.Sprintf("invalid code %q (want 301, 302, 303, 307 or 308)", s))
			ok = false
		default:
			r.Code = c
		}
	}
	return r, ok
}

// checkExpand checks that the group references ($1, ${1}, $name, ${name})
// of template exist in re, and returns a message if one does not.
func checkExpand(re *regexp.Regexp, template string) string {
	names := re.SubexpNames()
	for rest := template; ; {
		i := strings.IndexByte(rest, '$')
		if i < 0 || i+1 >= len(rest) {
			return ""
		}
		rest = rest[i+1:]
		var ref string
		switch {
		case rest[0] == '$':
			rest = rest[1:]
			continue
		case rest[0] == '{':
			end := strings.IndexByte(rest, '}')
			if end < 0 {
				return "unclosed ${ in target; write $$ for a literal $"
			}
			ref, rest = rest[1:end], rest[end+1:]
		default:
			end := 0
			for end < len(rest) && (rest[end] == '_' || rest[end] >= '0' && rest[end] <= '9' ||
				rest[end] >= 'a' && rest[end] <= 'z' || rest[end] >= 'A' && rest[end] <= 'Z') {
				end++
			}
			if end == 0 {
				return "a $ not followed by a group; write $$ for a literal $"
			}
			ref, rest = rest[:end], rest[end:]
		}
		if n, err := strconv.Atoi(ref); err == nil {
			if n > re.NumSubexp() {
				return fmt.Sprintf("target refers to group $%d, but from has %d groups", n, re.NumSubexp())
			}
			continue
		}
		if !slices.Contains(names[1:], ref) {
			return fmt.Sprintf("target refers to group %q, which from does not name (write ${1}x for group 1 followed by x)", ref)
		}
	}
}

// pathPrefix parses strip_prefix or add_prefix: a path of unreserved
// characters, starting with a slash and not ending in one.
func (l *loader) pathPrefix(n *yaml.Node, key string) string {
	s, ok := l.string(n, key, "a path prefix")
	if !ok {
		return ""
	}
	bad := s == "" || s[0] != '/' || strings.HasSuffix(s, "/") ||
		strings.Contains(s, "//") || strings.Contains(s, "/./") || strings.Contains(s, "/../") ||
		strings.HasSuffix(s, "/.") || strings.HasSuffix(s, "/..")
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("/-._~", c)) {
			bad = true
		}
	}
	if bad {
		l.el.add(n.Line, key, s, fmt.Sprintf("invalid path prefix %q: want /segment[/segment...] of letters, digits and -._~, no trailing slash", s))
		return ""
	}
	return s
}

// headerOps walks request_headers or response_headers; the headers of
// owned are leproxy's and refused.
func (l *loader) headerOps(n *yaml.Node, key string, owned []string) HeaderOps {
	var ops HeaderOps
	if !l.is(n, key, yaml.MappingNode, "a mapping with set, add and remove") {
		return ops
	}
	f := l.fields(n, key, "remove", "set", "add")
	if v := f["remove"]; v != nil {
		names, nodes := l.stringList(v, key+".remove", "header names")
		for i, name := range names {
			if c, ok := l.headerName(nodes[i], key+".remove", name, owned); ok {
				ops.Remove = append(ops.Remove, c)
			}
		}
	}
	ops.Set = l.headerFields(f["set"], key+".set", owned)
	ops.Add = l.headerFields(f["add"], key+".add", owned)
	return ops
}

// headerFields walks a mapping of header names to values.
func (l *loader) headerFields(n *yaml.Node, key string, owned []string) []HeaderField {
	if n == nil || !l.is(n, key, yaml.MappingNode, "a mapping of header names to values") {
		return nil
	}
	var out []HeaderField
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if !l.is(k, key, yaml.ScalarNode, "a header name") {
			continue
		}
		name, ok := l.headerName(k, key, k.Value, owned)
		if !ok {
			continue
		}
		val, ok := l.string(v, key+"."+k.Value, "a header value")
		if !ok {
			continue
		}
		if !httpguts.ValidHeaderFieldValue(val) {
			l.el.add(v.Line, key+"."+k.Value, val, fmt.Sprintf("invalid header value %q", val))
			continue
		}
		out = append(out, HeaderField{name, strings.TrimSpace(val)})
	}
	return out
}

// headerName checks a header name and returns its canonical form.
func (l *loader) headerName(n *yaml.Node, key, name string, owned []string) (string, bool) {
	if !httpguts.ValidHeaderFieldName(name) {
		l.el.add(n.Line, key, name, fmt.Sprintf("invalid header name %q", name))
		return "", false
	}
	c := http.CanonicalHeaderKey(name)
	if slices.Contains(reservedHeaders, c) {
		l.el.add(n.Line, key, name, fmt.Sprintf("header %q frames or routes the message and cannot be changed", name))
		return "", false
	}
	if slices.Contains(owned, c) {
		l.el.add(n.Line, key, name, fmt.Sprintf("header %q is set by leproxy on every proxied request", name))
		return "", false
	}
	return c, true
}

// compress walks "compress": true, false, or a mapping with encodings and
// min_length.
func (l *loader) compress(n *yaml.Node, key string) *Compress {
	if n.Kind == yaml.ScalarNode {
		on, ok := l.bool(n, key)
		if !ok || !on {
			return nil
		}
		return &Compress{Encodings: DefaultEncodings, MinLength: DefaultCompressMinLength}
	}
	if !l.is(n, key, yaml.MappingNode, "true, false or a mapping with encodings and min_length") {
		return nil
	}
	c := &Compress{Encodings: DefaultEncodings, MinLength: DefaultCompressMinLength}
	f := l.fields(n, key, "encodings", "min_length")
	if v := f["encodings"]; v != nil {
		names, nodes := l.stringList(v, key+".encodings", "encodings (zstd, gzip)")
		var encs []string
		for i, e := range names {
			switch {
			case e != "zstd" && e != "gzip":
				l.el.add(nodes[i].Line, key+".encodings", e, fmt.Sprintf("unknown encoding %q (known: zstd, gzip)", e))
			case slices.Contains(encs, e):
				l.el.add(nodes[i].Line, key+".encodings", e, fmt.Sprintf("duplicate encoding %q", e))
			default:
				encs = append(encs, e)
			}
		}
		if len(encs) > 0 {
			c.Encodings = encs
		}
	}
	if v := f["min_length"]; v != nil {
		if s, ok := l.string(v, key+".min_length", "a size in bytes"); ok {
			if s == "0" {
				c.MinLength = 0
			} else if m, err := bytesize.Parse(s); err != nil {
				l.el.add(v.Line, key+".min_length", s, fmt.Sprintf("invalid size %q: %v", s, err))
			} else {
				c.MinLength = m
			}
		}
	}
	return c
}
