package config

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/leproxy/leproxy/dbproxy"
)

var update = flag.Bool("update", false, "rewrite the .golden files of testdata/ok and testdata/errors")

// testdataDir is the absolute path of testdata, which golden inputs name
// as {{testdata}} so that they can point at files that exist.
func testdataDir(t testing.TB) string {
	t.Helper()
	dir, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// readInput reads a golden input and fills in {{testdata}}.
func readInput(t testing.TB, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(strings.ReplaceAll(string(data), "{{testdata}}", testdataDir(t)))
}

// dump is a stable text form of a Config, every field included.
func dump(c *Config) string {
	var b strings.Builder
	fmt.Fprintf(&b, "file %s\n", c.File)
	for _, h := range c.Hosts {
		be := h.Backend
		fmt.Fprintf(&b, "host %s line=%d kind=%v raw=%q", h.Name, h.Line, be.Kind, be.Raw)
		if be.Addr != "" {
			fmt.Fprintf(&b, " addr=%q", be.Addr)
		}
		if be.URL != nil {
			fmt.Fprintf(&b, " url=%q scheme=%s urlhost=%s path=%q", be.URL, be.URL.Scheme, be.URL.Host, be.URL.Path)
		}
		if be.Dir != "" {
			fmt.Fprintf(&b, " dir=%q", be.Dir)
		}
		fmt.Fprintf(&b, " hsts=%t rewrite_host=%t\n", h.HSTS, h.RewriteHost)
	}
	for _, l := range c.TCP {
		fmt.Fprintf(&b, "listener line=%d listen=%q protocol=%s default=%q max_conns=%d idle_timeout=%v\n",
			l.Line, l.Listen, l.Protocol, l.Default, l.MaxConns, l.IdleTimeout)
		for _, k := range slices.Sorted(maps.Keys(l.Options)) {
			fmt.Fprintf(&b, "  option %s=%q\n", k, l.Options[k])
		}
		for _, r := range l.Routes {
			fmt.Fprintf(&b, "  route %s line=%d backend=%q tls=%s ca=%q allow_plaintext=%t\n",
				r.Host, r.Line, r.Backend, r.TLS, r.CA, r.AllowPlaintext)
		}
	}
	for _, r := range c.Certificates {
		fmt.Fprintf(&b, "certificates line=%d names=%s challenge=%s\n", r.Line, strings.Join(r.Names, ","), r.Challenge)
		if d := r.DNS; d != nil {
			fmt.Fprintf(&b, "  dns hook=%q hook_timeout=%v check_servers=%s propagation_timeout=%v\n", d.Hook, d.HookTimeout, strings.Join(d.CheckServers, ","), d.PropagationTimeout)
			if u := d.RFC2136; u != nil {
				fmt.Fprintf(&b, "  rfc2136 server=%s zone=%s key=%s alg=%s secret_from=%q secret_len=%d\n", u.Server, u.Zone, u.TSIGKey, u.TSIGAlgorithm, u.SecretFrom, len(u.TSIGSecret))
			}
		}
	}
	fmt.Fprintf(&b, "hostnames %s\n", strings.Join(c.Hostnames(), " "))
	return b.String()
}

// checkGolden compares got with the golden file, or rewrites it with -update.
func checkGolden(t *testing.T, golden, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("got:\n%s\nwant (%s):\n%s", got, golden, want)
	}
}

// goldenInputs lists the .yml files of a testdata directory.
func goldenInputs(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", dir, "*.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no inputs in testdata/%s", dir)
	}
	return files
}

func TestGoldenValid(t *testing.T) {
	for _, in := range goldenInputs(t, "ok") {
		t.Run(filepath.Base(in), func(t *testing.T) {
			cfg, err := Parse(in, readInput(t, in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			got := strings.ReplaceAll(dump(cfg), testdataDir(t), "{{testdata}}")
			checkGolden(t, strings.TrimSuffix(in, ".yml")+".golden", got)
		})
	}
}

func TestGoldenErrors(t *testing.T) {
	for _, in := range goldenInputs(t, "errors") {
		t.Run(filepath.Base(in), func(t *testing.T) {
			cfg, err := Parse(in, readInput(t, in))
			if err == nil {
				t.Fatalf("Parse succeeded, want an error; got:\n%s", dump(cfg))
			}
			if cfg != nil {
				t.Errorf("got a Config with an error, want nil")
			}
			checkErrorShape(t, err)
			got := strings.ReplaceAll(err.Error(), testdataDir(t), "{{testdata}}") + "\n"
			checkGolden(t, strings.TrimSuffix(in, ".yml")+".golden", got)
		})
	}
}

// checkErrorShape checks that err is a *Error or a join of them, in line
// order, each naming the file.
func checkErrorShape(t *testing.T, err error) []*Error {
	t.Helper()
	errs := configErrors(err)
	if len(errs) == 0 {
		t.Fatalf("error %T %q is neither a *Error nor a join of them", err, err)
	}
	for i, e := range errs {
		if e.File == "" {
			t.Errorf("error %q has no file", e)
		}
		if i > 0 && e.Line < errs[i-1].Line {
			t.Errorf("error %q (line %d) after one at line %d: want line order", e, e.Line, errs[i-1].Line)
		}
	}
	return errs
}

// configErrors unpacks err into its *Error values; nil if any part is not
// one.
func configErrors(err error) []*Error {
	var e *Error
	if errors.As(err, &e) && e == err {
		return []*Error{e}
	}
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return nil
	}
	var out []*Error
	for _, part := range j.Unwrap() {
		e, ok := part.(*Error)
		if !ok {
			return nil
		}
		out = append(out, e)
	}
	return out
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mapping.yml")
	if err := os.WriteFile(path, []byte("www.example.com: 127.0.0.1:8080\ntcp:\n- listen: :5432\n  protocol: postgresql\n  routes: {db.example.com: 10.0.0.1:5432}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if cfg.File != path {
		t.Errorf("got File %q, want %q", cfg.File, path)
	}
	if len(cfg.Hosts) != 1 || cfg.Hosts[0].Name != "www.example.com" {
		t.Errorf("got hosts %+v, want www.example.com", cfg.Hosts)
	}
	if len(cfg.TCP) != 1 || cfg.TCP[0].Protocol != "postgres" {
		t.Errorf("got listeners %+v, want one postgres listener (alias resolved)", cfg.TCP)
	}
}

func TestLoadReadErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.yml")
	_, err := Load(missing)
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("got %T %v, want *Error", err, err)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("got %v, want errors.Is fs.ErrNotExist", err)
	}
	if want := missing + ": reading mapping: no such file or directory"; err.Error() != want {
		t.Errorf("got %q, want %q", err, want)
	}

	big := filepath.Join(dir, "big.yml")
	line := "www.example.com: 127.0.0.1:8080 # padding padding padding padding padding\n"
	if err := os.WriteFile(big, []byte(strings.Repeat(line, maxFileSize/len(line)+1)), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Load(big)
	if want := big + ": mapping is larger than 4 MiB"; err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}

	_, err = Load(dir)
	if err == nil || !strings.HasPrefix(err.Error(), dir+": reading mapping: ") {
		t.Errorf("loading a directory: got %v, want a reading error", err)
	}
}

// TestParseErrors pins the line, key and message of one error per kind of
// problem; the golden files show them in context.
func TestParseErrors(t *testing.T) {
	td := testdataDir(t)
	tests := []struct {
		name  string
		input string
		line  int
		key   string
		msg   string // substring of Error.Msg
	}{
		{"empty file", "", 0, "", "no hosts"},
		{"comments only", "# nothing\n\n", 0, "", "no hosts"},
		{"empty mapping", "{}\n", 1, "", "no hosts"},
		{"unknown host key", "a.example.com:\n  backend: :80\n  hst: true\n", 3, "a.example.com", `unknown key "hst" (known: backend, hsts, preserve_host, middleware, rate_limit)`},
		{"unknown listener key", "tcp:\n- listen: :1\n  protocol: tls\n  route: {}\n", 4, "tcp[0]", `unknown key "route"`},
		{"bad protocol option", "tcp:\n- listen: :21\n  protocol: ftp\n  passive_ports: 9-1\n  routes: {a.example.com: 127.0.0.1:2}\n", 4, "tcp[0].passive_ports", `invalid passive_ports "9-1": expected a port range`},
		{"bad kafka frame limit", "tcp:\n- listen: :9093\n  protocol: kafka\n  max_request: 3GiB\n  routes: {a.example.com: 127.0.0.1:2}\n", 4, "tcp[0].max_request", `at most 2147483647 bytes`},
		{"bad cassandra frame limit", "tcp:\n- listen: :9042\n  protocol: cql\n  max_frame: lots\n  routes: {a.example.com: 127.0.0.1:2}\n", 4, "tcp[0].max_frame", `want a number of bytes`},
		{"protocol option elsewhere", "tcp:\n- listen: :1\n  protocol: tls\n  passive_ports: 30000-30009\n  routes: {a.example.com: 127.0.0.1:2}\n", 4, "tcp[0]", `unknown key "passive_ports"`},
		{"protocol option not a string", "tcp:\n- listen: :21\n  protocol: ftps\n  passive_address: [1]\n  routes: {a.example.com: 127.0.0.1:2}\n", 4, "tcp[0].passive_address", `expected a string`},
		{"unknown route key", "tcp:\n- listen: :1\n  protocol: tls\n  routes:\n    a.example.com:\n      backend: :2\n      sni: x\n", 7, "tcp[0].routes[a.example.com]", `unknown key "sni"`},
		{"duplicate host", "a.example.com: :80\nb.example.com: :81\na.example.com: :82\n", 3, "", `duplicate host "a.example.com" (first at line 1)`},
		{"duplicate host other spelling", "a.example.com: :80\n\nA.EXAMPLE.COM.: :82\n", 3, "", `duplicate host "A.EXAMPLE.COM.": it is "a.example.com", first at line 1`},
		{"duplicate long key", "a.example.com:\n  backend: :80\n  backend: :81\n", 3, "a.example.com", `duplicate key "backend" (first at line 2)`},
		{"duplicate route", "tcp:\n- listen: :1\n  protocol: tls\n  routes:\n    a.example.com: :2\n    a.example.com: :3\n", 6, "tcp[0].routes", `duplicate route "a.example.com" (first at line 5)`},
		{"duplicate listen", "tcp:\n- listen: :1\n  protocol: tls\n  routes: {a.example.com: 127.0.0.1:2}\n- listen: 0.0.0.0:1\n  protocol: tls\n  routes: {b.example.com: 127.0.0.1:2}\n", 5, "tcp[1].listen", `conflicts with ":1" of tcp[0] at line 2`},
		{"duplicate tcp section", "tcp: []\ntcp: []\n", 2, "", "duplicate tcp section (first at line 1)"},
		{"host without dot", "x.example.com: :80\nlocalhost: :80\n", 2, "", `invalid hostname "localhost": hostname has no dot`},
		{"host with port", "a.example.com:8443: :80\n", 1, "", `invalid hostname "a.example.com:8443": a hostname has no port`},
		{"wildcard host without dns-01", "'*.example.com': :80\n", 1, "", `wildcard host "*.example.com" needs a dns-01 challenge`},
		{"unquoted wildcard host without dns-01", "x.example.com: :80\n*.example.com: :80\n", 2, "", `wildcard host "*.example.com" needs a dns-01 challenge`},
		{"wildcard route without dns-01", "tcp:\n- listen: :1\n  protocol: tls\n  routes:\n    '*.example.com': :2\n", 5, "tcp[0].routes", `wildcard host "*.example.com" needs a dns-01 challenge`},
		{"partial wildcard", "'a*.example.com': :80\n", 1, "", "the whole first label only"},
		{"invalid character", "a_b.example.com: :80\n", 1, "", `invalid character '_'`},
		{"hyphen", "a.-b.example.com: :80\n", 1, "", `label "-b" starts or ends with a hyphen`},
		{"empty label", "a..example.com: :80\n", 1, "", "empty label"},
		{"IP host with a zone", "'fe80::1%eth0': :80\n", 1, "", "has a zone"},
		{"numeric TLD", "a.b.42: :80\n", 1, "", `numeric top-level label "42"`},
		{"non-ASCII host", "x.example.com: :80\nbücher.example: :80\n", 2, "", "punycode"},
		{"tcp is the section", "tcp: 127.0.0.1:80\n", 1, "tcp", `expected a list of listeners, got "127.0.0.1:80"`},
		{"empty backend", "a.example.com: :80\nb.example.com:\n", 2, "b.example.com", "missing backend"},
		{"missing port", "a.example.com: 10.0.0.1\n", 1, "a.example.com", "missing port"},
		{"named port", "a.example.com: 10.0.0.1:http\n", 1, "a.example.com", `port "http" is not a number`},
		{"port out of range", "\na.example.com: 10.0.0.1:65536\n", 2, "a.example.com", "port 65536 out of range 1-65535"},
		{"port zero", "a.example.com: 10.0.0.1:0\n", 1, "a.example.com", "port 0 out of range"},
		{"bad backend host", "a.example.com: a/b:80\n", 1, "a.example.com", `invalid host "a/b"`},
		{"URL scheme", "a.example.com: ftp://10.0.0.1/\n", 1, "a.example.com", `unsupported scheme "ftp" (want http or https)`},
		{"URL query", "a.example.com: http://10.0.0.1/?x=1\n", 1, "a.example.com", "cannot have a query"},
		{"URL fragment", "a.example.com: 'http://10.0.0.1/#x'\n", 1, "a.example.com", "cannot have a fragment"},
		{"URL userinfo", "a.example.com: http://u:p@10.0.0.1/\n", 1, "a.example.com", "user info"},
		{"URL port", "a.example.com: http://10.0.0.1:0/\n", 1, "a.example.com", "port 0 out of range"},
		{"relative path", "a.example.com: www/\n", 1, "a.example.com", "relative path"},
		{"long form backend", "a.example.com:\n  hsts: true\n  backend: https://x.internal:99999\n", 3, "a.example.com.backend", "port 99999 out of range"},
		{"long form without backend", "a.example.com:\n  hsts: true\n", 1, "a.example.com", `missing key "backend"`},
		{"static dir missing", "a.example.com: " + td + "/nothere/\n", 1, "a.example.com", "static directory " + td + "/nothere/ does not exist"},
		{"static dir is a file", "a.example.com: " + td + "/ca.pem/\n", 1, "a.example.com", "is not a directory"},
		{"socket dir missing", "a.example.com: " + td + "/nothere/app.sock\n", 1, "a.example.com", "directory " + td + "/nothere of the unix socket does not exist"},
		{"socket is a directory", "a.example.com: " + td + "/www\n", 1, "a.example.com", "is a directory; end it with a slash"},
		{"socket is a file", "a.example.com: " + td + "/ca.pem\n", 1, "a.example.com", "exists and is not a unix socket"},
		{"hsts not bool", "a.example.com:\n  backend: :80\n  hsts: yes\n", 3, "a.example.com.hsts", `expected true or false, got "yes"`},
		{"list for backend", "a.example.com:\n- :80\n", 2, "a.example.com", "expected a backend or a mapping of host options, got a list"},
		{"top-level list", "- a.example.com: :80\n", 1, "", "expected a mapping of hostnames to backends, got a list"},
		{"top-level scalar", "hello\n", 1, "", `expected a mapping of hostnames to backends, got "hello"`},
		{"non-scalar key", "[a, b]: :80\n", 1, "", "expected a hostname, got a list"},
		{"alias", "a.example.com: &x :80\nb.example.com: *x\n", 2, "b.example.com", "YAML aliases (*x) are not supported"},
		{"tcp not a list", "tcp:\n  listen: :1\n", 2, "tcp", "expected a list of listeners, got a mapping"},
		{"listener not a mapping", "tcp:\n- :5432\n", 2, "tcp[0]", `expected a listener (a mapping with listen, protocol and routes), got ":5432"`},
		{"listen missing", "tcp:\n- protocol: tls\n  routes: {a.example.com: 127.0.0.1:1}\n", 2, "tcp[0]", `missing key "listen"`},
		{"listen without port", "tcp:\n- listen: \"5432\"\n  protocol: tls\n  routes: {a.example.com: 127.0.0.1:1}\n", 2, "tcp[0].listen", `invalid listen address "5432": missing port`},
		{"listen port range", "tcp:\n- listen: :65536\n  protocol: tls\n  routes: {a.example.com: 127.0.0.1:1}\n", 2, "tcp[0].listen", "port 65536 out of range 1-65535"},
		{"listen port name", "tcp:\n- listen: :pg\n  protocol: tls\n  routes: {a.example.com: 127.0.0.1:1}\n", 2, "tcp[0].listen", `port "pg" is not a number`},
		{"unknown protocol", "tcp:\n- listen: :1\n\n  protocol: postgress\n  routes: {a.example.com: 127.0.0.1:1}\n", 4, "tcp[0].protocol", `unknown protocol "postgress" (known: amqp, cassandra (cql), elasticsearch (opensearch), ftp, ftps, kafka, ldap (ldaps), memcached, mongodb (mongo), mssql (sqlserver), mysql (mariadb), postgres (postgresql), redis, smtp, smtps, tls)`},
		{"protocol missing", "tcp:\n- listen: :1\n  routes: {a.example.com: 127.0.0.1:1}\n", 2, "tcp[0]", `missing key "protocol"`},
		{"routes missing", "tcp:\n- listen: :1\n  protocol: tls\n", 2, "tcp[0]", `missing key "routes"`},
		{"routes empty", "tcp:\n- listen: :1\n  protocol: tls\n  routes: {}\n", 4, "tcp[0].routes", "no routes"},
		{"routes null", "tcp:\n- listen: :1\n  protocol: tls\n  routes:\n", 4, "tcp[0].routes", "expected a mapping of hostnames to backends, got nothing"},
		{"routes list", "tcp:\n- listen: :1\n  protocol: tls\n  routes:\n  - a.example.com: :1\n", 5, "tcp[0].routes", "got a list"},
		{"route host invalid", "tcp:\n- listen: :1\n  protocol: tls\n  routes:\n    db: :1\n", 5, "tcp[0].routes", `invalid hostname "db": hostname has no dot`},
		{"route backend URL", "tcp:\n- listen: :1\n  protocol: tls\n  routes:\n    a.example.com: http://x:1\n", 5, "tcp[0].routes[a.example.com]", "a tcp route's backend is host:port"},
		{"route backend no port", "tcp:\n- listen: :1\n  protocol: tls\n  routes:\n    a.example.com:\n      backend: db.internal\n", 6, "tcp[0].routes[a.example.com].backend", "missing port"},
		{"route backend missing", "tcp:\n- listen: :1\n  protocol: tls\n  routes:\n    a.example.com:\n      tls: verify\n", 5, "tcp[0].routes[a.example.com]", `missing key "backend"`},
		{"tls mode", "tcp:\n- listen: :1\n  protocol: tls\n  routes:\n    a.example.com:\n      backend: :2\n      tls: true\n", 7, "tcp[0].routes[a.example.com].tls", `unknown tls mode "true" (known: none, verify, insecure, strict)`},
		{"ca without verify", "tcp:\n- listen: :1\n  protocol: tls\n  routes:\n    a.example.com:\n      backend: :2\n      ca: " + td + "/ca.pem\n", 7, "tcp[0].routes[a.example.com].ca", `needs "tls: verify" or "tls: strict" (tls is "none")`},
		{"strict on postgres", "tcp:\n- listen: :1\n  protocol: postgres\n  routes:\n    a.example.com:\n      backend: :2\n      tls: strict\n", 5, "tcp[0].routes[a.example.com].tls", `tls mode "strict" (TLS from the first byte) is for ldap (LDAPS), mssql (TDS 8.0 strict TLS) listeners, not postgres: use verify`},
		{"ca with insecure", "tcp:\n- listen: :1\n  protocol: tls\n  routes:\n    a.example.com:\n      backend: :2\n      tls: insecure\n      ca: " + td + "/ca.pem\n", 8, "tcp[0].routes[a.example.com].ca", `(tls is "insecure")`},
		{"ca missing", "tcp:\n- listen: :1\n  protocol: tls\n  routes:\n    a.example.com:\n      backend: :2\n      tls: verify\n      ca: " + td + "/none.pem\n", 8, "tcp[0].routes[a.example.com].ca", td + "/none.pem does not exist"},
		{"ca not PEM", "tcp:\n- listen: :1\n  protocol: tls\n  routes:\n    a.example.com:\n      backend: :2\n      tls: verify\n      ca: " + td + "/notpem.txt\n", 8, "tcp[0].routes[a.example.com].ca", "no PEM certificate in " + td + "/notpem.txt"},
		{"ca bad certificate", "tcp:\n- listen: :1\n  protocol: tls\n  routes:\n    a.example.com:\n      backend: :2\n      tls: verify\n      ca: " + td + "/badcert.pem\n", 8, "tcp[0].routes[a.example.com].ca", "certificate 1 in " + td + "/badcert.pem"},
		{"ca directory", "tcp:\n- listen: :1\n  protocol: tls\n  routes:\n    a.example.com:\n      backend: :2\n      tls: verify\n      ca: " + td + "\n", 8, "tcp[0].routes[a.example.com].ca", "is not a regular file"},
		{"ca relative", "tcp:\n- listen: :1\n  protocol: tls\n  routes:\n    a.example.com:\n      backend: :2\n      tls: verify\n      ca: ca.pem\n", 8, "tcp[0].routes[a.example.com].ca", "relative path"},
		{"plaintext value", "tcp:\n- listen: :1\n  protocol: tls\n  routes:\n    a.example.com:\n      backend: :2\n      plaintext: yes\n", 7, "tcp[0].routes[a.example.com].plaintext", `expected allow or refuse, got "yes"`},
		{"proxy_protocol value", "tcp:\n- listen: :1\n  protocol: tls\n  routes:\n    a.example.com:\n      backend: :2\n      proxy_protocol: v3\n", 7, "tcp[0].routes[a.example.com].proxy_protocol", `unknown proxy_protocol "v3" (known: none, v1, v2)`},
		{"proxy_protocol not a string", "tcp:\n- listen: :1\n  protocol: tls\n  routes:\n    a.example.com:\n      backend: :2\n      proxy_protocol: [v1]\n", 7, "tcp[0].routes[a.example.com].proxy_protocol", "got a list"},
		{"default not a route", "tcp:\n- listen: :1\n  protocol: tls\n  default: b.example.com\n  routes: {a.example.com: 127.0.0.1:2}\n", 4, "tcp[0].default", `default "b.example.com" is not one of this listener's routes`},
		{"max_conns zero", "tcp:\n- listen: :1\n  protocol: tls\n  max_conns: 0\n  routes: {a.example.com: 127.0.0.1:2}\n", 4, "tcp[0].max_conns", `expected a positive integer, got "0"`},
		{"max_conns text", "tcp:\n- listen: :1\n  protocol: tls\n  max_conns: lots\n  routes: {a.example.com: 127.0.0.1:2}\n", 4, "tcp[0].max_conns", `expected a positive integer, got "lots"`},
		{"idle_timeout unit", "tcp:\n- listen: :1\n  protocol: tls\n  idle_timeout: 30\n  routes: {a.example.com: 127.0.0.1:2}\n", 4, "tcp[0].idle_timeout", `expected a positive duration like 30s or 5m, got "30"`},
		{"idle_timeout negative", "tcp:\n- listen: :1\n  protocol: tls\n  idle_timeout: -1m\n  routes: {a.example.com: 127.0.0.1:2}\n", 4, "tcp[0].idle_timeout", "positive duration"},
		{"multiple documents", "a.example.com: :80\n---\nb.example.com: :81\n", 3, "", "a mapping is one YAML document"},
		{"syntax: bad indentation", "a.example.com:\n  backend: :80\nb.example.com: :81\n  c.example.com: :82\n", 4, "", "invalid YAML: mapping values are not allowed in this context"},
		{"syntax: dedent", "shop.example.com:\n  backend: :80\n hsts: true\n", 3, "", "invalid YAML: did not find expected key"},
		{"syntax: first line", "\ta.example.com: :80\nb.example.com:\n  backend: :81\n", 1, "", "invalid YAML: found character that cannot start any token"},
		{"syntax: unclosed quote", "a.example.com: :80\nb.example.com: \"x\nc.example.com: :82\n", 2, "", "invalid YAML: found unexpected end of stream"},
		{"syntax: unknown anchor", "a.example.com: :80\n\n\nb.example.com: *nowhere\n", 4, "", "invalid YAML: unknown anchor 'nowhere' referenced"},
		{"syntax: no colon", "a.example.com: :80\nb.example.com\nc.example.com: :82\n", 2, "", "invalid YAML: could not find expected ':'"},
		{"syntax: unclosed flow", "a.example.com: :80\ntcp:\n- routes: {x: y\n- listen: :1\n", 3, "", "invalid YAML: did not find expected ',' or '}'"},
		{"invalid UTF-8", "a.example.com: :80\nb.example.com: \xff\n", 2, "", "invalid UTF-8 (byte 0xff)"},
		{"control character", "a.example.com: :80\n\nb.example.com: \x01\n", 3, "", "control character U+0001 is not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("m.yml", []byte(tt.input))
			if err == nil {
				t.Fatal("got no error")
			}
			errs := checkErrorShape(t, err)
			for _, e := range errs {
				if e.Line == tt.line && e.Key == tt.key && strings.Contains(e.Msg, tt.msg) {
					return
				}
			}
			t.Errorf("got %q, want an error at line %d, key %q, with message containing %q", err, tt.line, tt.key, tt.msg)
		})
	}
}

// TestParseReportsAll checks that all problems come back, in line order,
// not only the first.
func TestParseReportsAll(t *testing.T) {
	input := "tcp:\n- listen: :1\n  protocol: nope\n  routes: {a.example.com: 127.0.0.1:2}\n" +
		"b.example.com: :0\nlocalhost: :80\nc.example.com:\n  hst: true\n"
	_, err := Parse("m.yml", []byte(input))
	errs := checkErrorShape(t, err)
	var lines []int
	for _, e := range errs {
		lines = append(lines, e.Line)
	}
	if got, want := fmt.Sprint(lines), "[3 5 6 7 8]"; got != want {
		t.Errorf("got errors at lines %s, want %s; errors:\n%v", got, want, err)
	}
	var first *Error
	if !errors.As(err, &first) || first.Line != 3 {
		t.Errorf("errors.As found %v, want the line 3 error", first)
	}
}

func TestParseValues(t *testing.T) {
	cfg, err := Parse("m.yml", []byte(`
a.example.com:
  backend: http://10.0.0.1:8080/prefix/
  preserve_host: false
b.example.com: https://B.internal
tcp:
- listen: "[::]:5432"
  protocol: PostgreSQL
  default: A.Example.Com.
  idle_timeout: 90s
  max_conns: 7
  routes:
    a.example.com: 10.0.0.1:5432
    b.example.com:
      backend: 10.0.0.2:5432
      tls: insecure
      plaintext: allow
      proxy_protocol: v2
`))
	if err != nil {
		t.Fatal(err)
	}
	a, b := cfg.Hosts[0], cfg.Hosts[1]
	if a.Line != 2 || a.Backend.Kind != BackendURL || a.Backend.URL.Path != "/prefix/" || !a.RewriteHost || a.HSTS {
		t.Errorf("got host %+v, want line 2, URL backend with path /prefix/, RewriteHost", a)
	}
	if b.Backend.URL == nil || b.Backend.URL.Scheme != "https" || b.Backend.URL.Host != "B.internal" || b.RewriteHost {
		t.Errorf("got host %+v, want https://B.internal without RewriteHost", b)
	}
	l := cfg.TCP[0]
	if l.Line != 7 || l.Protocol != "postgres" || l.Default != "a.example.com" || l.IdleTimeout.String() != "1m30s" || l.MaxConns != 7 {
		t.Errorf("got listener %+v, want line 7, postgres, default a.example.com, 1m30s, 7", l)
	}
	r0, r1 := l.Routes[0], l.Routes[1]
	if r0.TLS != TLSNone || r0.AllowPlaintext || r0.ProxyProtocol != ProxyNone || r0.Line != 13 {
		t.Errorf("got route %+v, want TLS none, plaintext refused, no PROXY header, line 13", r0)
	}
	if r1.TLS != TLSInsecure || !r1.AllowPlaintext || r1.ProxyProtocol != ProxyV2 || r1.Backend != "10.0.0.2:5432" || r1.Line != 14 {
		t.Errorf("got route %+v, want TLS insecure, plaintext allowed, PROXY v2, line 14", r1)
	}
}

func TestParseStrict(t *testing.T) {
	cfg, err := Parse("m.yml", []byte(`
tcp:
- listen: ":1433"
  protocol: sqlserver
  routes:
    a.example.com:
      backend: 10.0.0.1:1433
      tls: strict
`))
	if err != nil {
		t.Fatal(err)
	}
	if l := cfg.TCP[0]; l.Protocol != "mssql" || l.Routes[0].TLS != TLSStrict {
		t.Errorf("got listener %+v, want mssql with a strict route", l)
	}
	cfg, err = Parse("m.yml", []byte(`
tcp:
- listen: ":389"
  protocol: ldap
  routes:
    a.example.com:
      backend: 10.0.0.1:636
      tls: strict
`))
	if err != nil {
		t.Fatal(err)
	}
	if l := cfg.TCP[0]; l.Protocol != "ldap" || l.Routes[0].TLS != TLSStrict {
		t.Errorf("got listener %+v, want ldap with a strict (LDAPS) route", l)
	}
}

func TestExampleMapping(t *testing.T) {
	const path = "../../mapping.example.yml"
	cfg, err := Load(path)
	if err != nil {
		t.Fatalf("Load(%s): %v", path, err)
	}
	kinds := make(map[BackendKind]bool)
	for _, h := range cfg.Hosts {
		kinds[h.Backend.Kind] = true
	}
	for _, k := range []BackendKind{BackendTCP, BackendURL, BackendUnix, BackendAbstract, BackendStatic} {
		if !kinds[k] {
			t.Errorf("example has no %v backend", k)
		}
	}
	var pg *Listener
	for i := range cfg.TCP {
		if cfg.TCP[i].Protocol == "postgres" {
			pg = &cfg.TCP[i]
		}
	}
	if pg == nil || len(pg.Routes) < 2 {
		t.Fatalf("got listeners %+v, want a postgres listener with two routes", cfg.TCP)
	}
	hsts := false
	for _, h := range cfg.Hosts {
		hsts = hsts || h.HSTS
	}
	if !hsts {
		t.Error("example shows no long-form host with hsts")
	}
}

// FuzzParse feeds Parse arbitrary input: it must not panic, and what it
// returns must hold together.
func FuzzParse(f *testing.F) {
	for _, dir := range []string{"ok", "errors"} {
		files, err := filepath.Glob(filepath.Join("testdata", dir, "*.yml"))
		if err != nil {
			f.Fatal(err)
		}
		for _, file := range files {
			f.Add(readInput(f, file))
		}
	}
	example, err := os.ReadFile("../../mapping.example.yml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example)
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.yml", data)
		if err != nil {
			if cfg != nil {
				t.Fatalf("got a Config and error %v", err)
			}
			lines := len(lineEnds(data)) + 1
			for _, e := range checkErrorShape(t, err) {
				if e.Line < 0 || e.Line > lines {
					t.Fatalf("error %q at line %d; input has %d lines", e, e.Line, lines)
				}
			}
			if _, err2 := Parse("fuzz.yml", data); err2 == nil || err2.Error() != err.Error() {
				t.Fatalf("second Parse: got %v, want %v", err2, err)
			}
			return
		}
		checkConfig(t, cfg)
	})
}

// checkConfig checks the promises a valid Config makes.
func checkConfig(t *testing.T, cfg *Config) {
	t.Helper()
	if len(cfg.Hosts) == 0 && len(cfg.TCP) == 0 {
		t.Fatal("valid config with no hosts and no listeners")
	}
	checkName := func(name string) {
		if n, err := normalizeHostname(name); err != nil || n != name {
			t.Fatalf("hostname %q is not canonical (%q, %v)", name, n, err)
		}
	}
	for _, h := range cfg.Hosts {
		checkName(h.Name)
		if h.Line < 1 {
			t.Fatalf("host %s at line %d", h.Name, h.Line)
		}
		b := h.Backend
		switch b.Kind {
		case BackendTCP, BackendUnix, BackendAbstract:
			if b.Addr == "" {
				t.Fatalf("host %s: %v backend without Addr", h.Name, b.Kind)
			}
		case BackendURL:
			if b.URL == nil || b.URL.Host == "" || (b.URL.Scheme != "http" && b.URL.Scheme != "https") {
				t.Fatalf("host %s: bad URL backend %+v", h.Name, b)
			}
		case BackendStatic:
			if !strings.HasSuffix(b.Dir, "/") || !filepath.IsAbs(b.Dir) {
				t.Fatalf("host %s: bad static dir %q", h.Name, b.Dir)
			}
		default:
			t.Fatalf("host %s: backend kind %v", h.Name, b.Kind)
		}
	}
	for _, l := range cfg.TCP {
		if c, ok := dbproxy.Canonical(l.Protocol); !ok || c != l.Protocol {
			t.Fatalf("listener %s: protocol %q", l.Listen, l.Protocol)
		}
		if len(l.Routes) == 0 {
			t.Fatalf("listener %s: no routes", l.Listen)
		}
		if err := checkHostPort(l.Listen); err != nil {
			t.Fatalf("listener %s: %v", l.Listen, err)
		}
		if l.MaxConns < 0 || l.IdleTimeout < 0 {
			t.Fatalf("listener %s: negative limits %d %v", l.Listen, l.MaxConns, l.IdleTimeout)
		}
		found := l.Default == ""
		for _, r := range l.Routes {
			checkName(r.Host)
			found = found || r.Host == l.Default
			if !slices.Contains(tlsModes, r.TLS) || (r.CA != "" && r.TLS != TLSVerify) {
				t.Fatalf("route %s: tls %q ca %q", r.Host, r.TLS, r.CA)
			}
			if err := checkRouteBackend(r.Backend); err != nil {
				t.Fatalf("route %s: %v", r.Host, err)
			}
		}
		if !found {
			t.Fatalf("listener %s: default %q is not a route", l.Listen, l.Default)
		}
	}
	names := cfg.Hostnames()
	if !slices.IsSorted(names) || len(slices.Compact(slices.Clone(names))) != len(names) {
		t.Fatalf("Hostnames() = %q: not sorted and unique", names)
	}
}
