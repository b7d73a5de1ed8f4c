package config

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode"
)

func TestRewriteLegacy(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"abstract socket", "a.example.com: @uwsgi\n", "a.example.com: '@uwsgi'\n"},
		{"abstract with comment", "a.example.com: @uwsgi   # app\n", "a.example.com: '@uwsgi' # app\n"},
		{"abstract with quote", "a.example.com: @it's\n", "a.example.com: '@it''s'\n"},
		{"abstract in long form", "a.example.com:\n  backend: @app\n", "a.example.com:\n  backend: '@app'\n"},
		{"IPv6 backend", "a.example.com: [::1]:8080\n", "a.example.com: '[::1]:8080'\n"},
		{"no space", "a.example.com:127.0.0.1:80\n", "a.example.com: '127.0.0.1:80'\n"},
		{"no space URL", "a.example.com:http://x/#c\n", "a.example.com: 'http://x/#c'\n"},
		{"space before colon", "a.example.com :127.0.0.1:80\n", "a.example.com: '127.0.0.1:80'\n"},
		{"wildcard key", "*.example.com: 127.0.0.1:80\n", "'*.example.com': 127.0.0.1:80\n"},
		{"wildcard key no space", "*.example.com:127.0.0.1:80\n", "'*.example.com': '127.0.0.1:80'\n"},
		{"CRLF kept", "a.example.com: @x\r\nb.example.com: :80\r\n", "a.example.com: '@x'\r\nb.example.com: :80\r\n"},
		{"indented legacy file", "# c\n  a.example.com: :80\n\tb.example.com: @x\n", "# c\na.example.com: :80\nb.example.com: '@x'\n"},
		{"indented comment in legacy file", "a.example.com: :80\n  # c\n b.example.com: :81\n", "a.example.com: :80\n# c\nb.example.com: :81\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(rewriteLegacy([]byte(tt.in)))
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			if strings.Count(got, "\n") != strings.Count(tt.in, "\n") {
				t.Errorf("line count changed: %q → %q", tt.in, got)
			}
		})
	}

	// YAML that must be left exactly as it is.
	unchanged := []string{
		"a.example.com: 127.0.0.1:80 # c\n",
		"a.example.com: \"@uwsgi\"\n",
		"a.example.com:\n  backend: :80\n  hsts: true\n",
		"tcp:\n  - listen: \":5432\"\n    routes:\n      db.example.com: 10.0.0.5:5432\n",
		"tcp:\n- listen: :5432\n  routes: {a.example.com: 10.0.0.5:5432}\n",
		"a.example.com: |\n  b.example.com: c\n",
		"a.example.com: &x\n  b.example.com: c\n",
		"a.example.com: [a, b]\n",
		"- :80\n- b.example.com: :81\n",
		"www.example.com:443: 127.0.0.1:80\n",
		"http://x.example.com: y\n",
		"  a.example.com: :80\n  b.example.com:\n    backend: :81\n",
		"# a.example.com:@x\n",
		"a.example.com: 'x\u2028y:@z'\n",
	}
	for _, in := range unchanged {
		if got := string(rewriteLegacy([]byte(in))); got != in {
			t.Errorf("rewriteLegacy(%q) = %q, want it unchanged", in, got)
		}
	}
}

// originalMapping reads data the way the original leproxy read
// mapping.txt: lines split at the first colon, "#" comments at the start
// of a line, empty lines skipped, anything else an error. It also reports
// whether a host appeared twice (the original kept the last).
func originalMapping(data []byte) (m map[string]string, dup, ok bool) {
	m = make(map[string]string)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if b := sc.Bytes(); len(b) == 0 || b[0] == '#' {
			continue
		}
		host, backend, found := strings.Cut(sc.Text(), ":")
		if !found {
			return nil, false, false
		}
		host = strings.TrimSpace(host)
		if _, seen := m[host]; seen {
			dup = true
		}
		m[host] = strings.TrimSpace(backend)
	}
	return m, dup, sc.Err() == nil
}

// checkLegacyCompat checks that a file the original leproxy accepted, with
// hosts and backends that are valid today, loads with the same hosts and
// backends. Left out are the files where the original's reading was itself
// broken or YAML cannot follow it: a backend holding " #" (the original
// kept such "comments" in the backend) or ": ", duplicate hosts (now an
// error), and bytes YAML forbids or reads as line breaks or spaces
// differently from Go (control characters, lone CR, Unicode spaces).
// It reports whether data was compared rather than left out.
func checkLegacyCompat(t *testing.T, data []byte) bool {
	t.Helper()
	orig, dup, ok := originalMapping(data)
	if !ok || dup || len(orig) == 0 {
		return false
	}
	if _, msg := checkText(data); msg != "" || bytes.HasPrefix(data, []byte("\ufeff")) {
		return false
	}
	for i, r := range string(data) {
		if r == '\r' && (i+1 >= len(data) || data[i+1] != '\n') || r > unicode.MaxASCII && unicode.IsSpace(r) {
			return false
		}
	}
	want := make(map[string]string)
	for host, backend := range orig {
		name, err := normalizeHostname(host)
		if err != nil {
			return false
		}
		if _, err := parseBackend(backend); err != nil {
			return false
		}
		if strings.Contains(backend, " #") || strings.Contains(backend, "\t#") ||
			strings.Contains(backend, ": ") || strings.Contains(backend, ":\t") || strings.HasSuffix(backend, ":") {
			return false
		}
		if _, seen := want[name]; seen {
			return false // duplicate once normalized: an error now
		}
		want[name] = backend
	}
	cfg, err := Parse("mapping.txt", data)
	if err != nil {
		t.Fatalf("original leproxy accepted %q, Parse: %v", data, err)
	}
	got := make(map[string]string)
	for _, h := range cfg.Hosts {
		got[h.Name] = h.Backend.Raw
	}
	if len(got) != len(want) {
		t.Fatalf("%q: got hosts %q, want %q", data, got, want)
	}
	for name, backend := range want {
		if got[name] != backend {
			t.Fatalf("%q: host %s: got backend %q, want %q", data, name, got[name], backend)
		}
	}
	return true
}

func TestLegacyCompat(t *testing.T) {
	inputs := []string{
		"subdomain1.example.com: 127.0.0.1:8080\nsubdomain2.example.com: /var/run/http.socket\n",
		"# comment\nsubdomain3.example.com: @abstractUnixSocket\n\nuploads.example.com: https://uploads-bucket.s3.amazonaws.com\n",
		"static.example.com: /usr/share/\n",
		"a.example.com:127.0.0.1:80\n  b.example.com :@x y\n\tc.example.com:\t[::1]:80\r\n",
		"a.example.com: @x#y\nb.example.com: -x:80\n",
	}
	for _, in := range inputs {
		if _, _, ok := originalMapping([]byte(in)); !ok {
			t.Fatalf("original would reject %q", in)
		}
		if !checkLegacyCompat(t, []byte(in)) {
			t.Errorf("%q was not compared", in)
		}
	}
	for _, name := range []string{"legacy.yml", "legacy_indented.yml", "legacy_crlf.yml"} {
		data, err := os.ReadFile(filepath.Join("testdata", "ok", name))
		if err != nil {
			t.Fatal(err)
		}
		if _, _, ok := originalMapping(data); !ok {
			t.Fatalf("original would reject %s", name)
		}
		if !checkLegacyCompat(t, data) {
			t.Errorf("%s was not compared", name)
		}
	}
}

// FuzzLegacyCompat looks for original mapping.txt files that do not load
// the same way here.
func FuzzLegacyCompat(f *testing.F) {
	f.Add([]byte("a.example.com: 127.0.0.1:8080\n# c\nb.example.com: @x\n"))
	f.Add([]byte("  a.example.com:[::1]:80\r\n\r\nb.example.com : http://x:1/p\n"))
	f.Add([]byte("a.example.com: /usr/share/\nb.example.com: /tmp/x.sock\n"))
	f.Add([]byte("\ta.example.com :\t@a'b#c\n#x\nb.example.com:https://[::1]:1/x\n"))
	f.Add([]byte("A.Example.COM.: -x:1\r\nb.example.com:@\tx\r\n\r\n"))
	for _, name := range []string{"legacy.yml", "legacy_indented.yml", "legacy_crlf.yml"} {
		data, err := os.ReadFile(filepath.Join("testdata", "ok", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkLegacyCompat(t, data)
	})
}
