package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// maxFileSize bounds a mapping file; a real one is a few kilobytes.
const maxFileSize = 4 << 20

// Load reads and validates the mapping file at path. The error, if any, is
// a *Error or an errors.Join of several, one per problem found, in line
// order.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, readError(path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, readError(path, err)
	}
	return Parse(path, data)
}

// readError describes a failure to read the mapping file.
func readError(path string, err error) error {
	msg := err.Error()
	if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
		msg = pe.Err.Error() // the path is already in the message
	}
	return &Error{File: path, Msg: "reading mapping: " + msg, Err: err}
}

// Parse validates a mapping held in memory; name is the file name used in
// errors and Config.File. Errors are as for Load.
func Parse(name string, data []byte) (*Config, error) {
	el := &errorList{file: name}
	if len(data) > maxFileSize {
		el.add(0, "", "", fmt.Sprintf("mapping is larger than %d MiB", maxFileSize>>20))
		return nil, el.err()
	}
	data = bytes.TrimPrefix(data, []byte("\ufeff"))
	l := &loader{
		el:    el,
		cfg:   &Config{File: name},
		hosts: make(map[string]int),
	}
	l.document(decodeYAML(el, rewriteLegacy(data)))
	l.checkCertificates()
	if err := el.err(); err != nil {
		return nil, err
	}
	return l.cfg, nil
}

// loader walks a mapping's YAML nodes into a Config, recording every
// problem it finds.
type loader struct {
	el    *errorList
	cfg   *Config
	hosts map[string]int // HTTP hostname → line of its first definition
	// certNames are the names of the certificates section, checked
	// against the whole mapping once it is read.
	certNames []certName
}

// document walks the whole mapping.
func (l *loader) document(doc *yaml.Node) {
	if doc == nil || emptyDocument(doc) {
		if len(l.el.errs) == 0 {
			l.el.add(0, "", "", "no hosts: the mapping is empty")
		}
		return
	}
	root := doc.Content[0]
	if !l.is(root, "", yaml.MappingNode, "a mapping of hostnames to backends") {
		return
	}
	tcpLine, limitsLine, certsLine := 0, 0, 0
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if !l.is(k, "", yaml.ScalarNode, "a hostname") {
			continue
		}
		if k.Value == "tcp" {
			if tcpLine > 0 {
				l.el.add(k.Line, "", "", fmt.Sprintf("duplicate tcp section (first at line %d)", tcpLine))
				continue
			}
			tcpLine = k.Line
			l.tcpSection(v)
			continue
		}
		if k.Value == "limits" {
			if limitsLine > 0 {
				l.el.add(k.Line, "", "", fmt.Sprintf("duplicate limits section (first at line %d)", limitsLine))
				continue
			}
			limitsLine = k.Line
			l.limitsSection(k, v)
			continue
		}
		if k.Value == "certificates" {
			if certsLine > 0 {
				l.el.add(k.Line, "", "", fmt.Sprintf("duplicate certificates section (first at line %d)", certsLine))
				continue
			}
			certsLine = k.Line
			l.certificatesSection(v)
			continue
		}
		l.host(k, v)
	}
	if len(l.cfg.Hosts) == 0 && len(l.cfg.TCP) == 0 && len(l.el.errs) == 0 {
		l.el.add(root.Line, "", "", "no hosts: the mapping has no HTTP hosts and no tcp listeners")
	}
}

// host walks one HTTP host: its key and its backend, short or long form.
func (l *loader) host(k, v *yaml.Node) {
	h := Host{Line: k.Line}
	key := k.Value
	if name, ok := l.hostname(k, ""); ok {
		h.Name = name
		if first, dup := l.hosts[name]; dup {
			l.el.add(k.Line, "", k.Value, duplicateMsg("host", k.Value, name, first))
		} else {
			l.hosts[name] = k.Line
		}
	}
	backend := v
	switch {
	case v.Kind == yaml.MappingNode:
		f := l.fields(v, key, "backend", "hsts", "preserve_host", "middleware", "rate_limit")
		backend = f["backend"]
		if backend == nil {
			l.el.add(k.Line, key, "", `missing key "backend"`)
		}
		key += ".backend"
		if n := f["hsts"]; n != nil {
			h.HSTS, _ = l.bool(n, k.Value+".hsts")
		}
		if n := f["preserve_host"]; n != nil {
			if preserve, ok := l.bool(n, k.Value+".preserve_host"); ok {
				h.RewriteHost = !preserve
			}
		}
		if n := f["middleware"]; n != nil {
			h.Middleware = l.middleware(n, k.Value+".middleware")
		}
		if n := f["rate_limit"]; n != nil {
			h.RateLimit = l.rateLimit(n, k.Value+".rate_limit")
		}
	case v.Kind != yaml.ScalarNode:
		l.is(v, key, yaml.ScalarNode, "a backend or a mapping of host options")
		return
	}
	if backend == nil {
		return
	}
	raw, ok := l.string(backend, key, "a backend")
	if !ok {
		return
	}
	if raw == "" {
		l.el.add(backend.Line, key, "", "missing backend")
		return
	}
	b, err := parseBackend(raw)
	if err != nil {
		l.el.add(backend.Line, key, raw, fmt.Sprintf("invalid backend %q: %v", raw, err)).Err = err
		return
	}
	h.Backend = b
	l.cfg.Hosts = append(l.cfg.Hosts, h)
}

// hostname checks the hostname key k of a host or route; errors go under
// path (the key of the enclosing section).
func (l *loader) hostname(k *yaml.Node, path string) (string, bool) {
	name, err := normalizeHostname(k.Value)
	if err != nil {
		l.el.add(k.Line, path, k.Value, fmt.Sprintf("invalid hostname %q: %v", k.Value, err))
		return "", false
	}
	return name, true
}

// fields checks the keys of the mapping m at path against known and
// returns the value node of each known key present. Unknown, duplicate
// and non-string keys are reported.
func (l *loader) fields(m *yaml.Node, path string, known ...string) map[string]*yaml.Node {
	out := make(map[string]*yaml.Node)
	lines := make(map[string]int)
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if !l.is(k, path, yaml.ScalarNode, "a key name") {
			continue
		}
		name := k.Value
		switch {
		case !slices.Contains(known, name):
			l.el.add(k.Line, path, name, fmt.Sprintf("unknown key %q (known: %s)", name, strings.Join(known, ", ")))
		case lines[name] > 0:
			l.el.add(k.Line, path, name, fmt.Sprintf("duplicate key %q (first at line %d)", name, lines[name]))
		default:
			lines[name] = k.Line
			out[name] = v
		}
	}
	return out
}

// is reports whether n is of kind want, and records "expected what, got
// ..." under key if it is not. Aliases are never accepted.
func (l *loader) is(n *yaml.Node, key string, want yaml.Kind, what string) bool {
	switch {
	case n.Kind == yaml.AliasNode:
		l.el.add(n.Line, key, "", fmt.Sprintf("YAML aliases (*%s) are not supported; write the value out", n.Value))
		return false
	case n.Kind != want:
		l.el.add(n.Line, key, "", fmt.Sprintf("expected %s, got %s", what, describe(n)))
		return false
	}
	return true
}

// string returns the scalar n as a string; null is "".
func (l *loader) string(n *yaml.Node, key, what string) (string, bool) {
	if !l.is(n, key, yaml.ScalarNode, what) {
		return "", false
	}
	if isNull(n) {
		return "", true
	}
	return n.Value, true
}

// bool returns the scalar n as a boolean.
func (l *loader) bool(n *yaml.Node, key string) (bool, bool) {
	if !l.is(n, key, yaml.ScalarNode, "true or false") {
		return false, false
	}
	var b bool
	if n.Tag != "!!bool" || n.Decode(&b) != nil {
		l.el.add(n.Line, key, n.Value, fmt.Sprintf("expected true or false, got %q", n.Value))
		return false, false
	}
	return b, true
}

// duplicateMsg says that the host or route raw, which is name, was
// defined first at line first.
func duplicateMsg(what, raw, name string, first int) string {
	if raw != name {
		return fmt.Sprintf("duplicate %s %q: it is %q, first at line %d", what, raw, name, first)
	}
	return fmt.Sprintf("duplicate %s %q (first at line %d)", what, name, first)
}
