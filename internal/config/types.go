// Package config loads and validates leproxy's mapping file.
//
// The mapping is YAML (gopkg.in/yaml.v3). Top-level keys are hostnames
// mapped to HTTP backends, in the short form "host: backend" of the original
// leproxy mapping.txt or in a long form with options, plus reserved keys:
// "tcp", that lists protocol-aware TLS listeners, "limits", and
// "certificates", that chooses the ACME challenge per name (dns-01 for
// wildcards, "*.example.com", which serve one label under them). Every
// error names the file, the line and the offending key or value.
package config

import (
	"crypto/x509"
	"net/url"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
)

// Config is a validated mapping.
type Config struct {
	File  string     // path the mapping was read from, as given
	Hosts []Host     // HTTP hosts in file order
	TCP   []Listener // protocol-aware TLS listeners in file order
	// Limits is the "limits:" section: per-client limits shared by every
	// listener, and the HTTPS listener's.
	Limits Limits
	// Certificates is the "certificates:" section: the challenge of each
	// listed name's certificate, in file order.
	Certificates []CertificateRule
}

// BackendKind says how leproxy reaches an HTTP backend.
type BackendKind int

const (
	BackendTCP      BackendKind = iota + 1 // "host:port": HTTP over TCP
	BackendURL                             // "http://…" or "https://…", optional path prefix
	BackendUnix                            // "/path/to.sock": HTTP over a unix socket
	BackendAbstract                        // "@name": HTTP over a Linux abstract unix socket
	BackendStatic                          // "/srv/www/": static files from a directory
)

// Backend is where an HTTP host's requests go.
type Backend struct {
	Kind BackendKind
	Raw  string   // as written in the mapping
	Addr string   // BackendTCP: host:port; BackendUnix: socket path; BackendAbstract: "@name"
	URL  *url.URL // BackendURL only: scheme, host and optional path prefix
	Dir  string   // BackendStatic only: absolute directory, with trailing slash
}

// Host is one HTTP hostname of the mapping.
type Host struct {
	Name    string // lower-case hostname, always contains a dot
	Backend Backend
	// HSTS forces the Strict-Transport-Security header for this host
	// (long form "hsts: true"); the -hsts flag turns it on for all hosts.
	HSTS bool
	// RewriteHost, when true (long form "preserve_host: false"), sends the
	// backend's own host name in the Host header instead of the client's.
	RewriteHost bool
	// Middleware is the host's middleware stack (long form key
	// "middleware"); nil when it has none.
	Middleware *Middleware
	// RateLimit limits each client's requests (long form "rate_limit").
	RateLimit RateLimit
	Line      int // line of the host's key in File
}

// TLSMode says how leproxy connects to a tcp route's backend. It is
// dbproxy's type, so that the program has one.
type TLSMode = dbproxy.TLSMode

const (
	TLSNone     = dbproxy.TLSNone     // plaintext to the backend (default)
	TLSVerify   = dbproxy.TLSVerify   // TLS, certificate verified against system roots or CA
	TLSInsecure = dbproxy.TLSInsecure // TLS, certificate not verified
	TLSStrict   = dbproxy.TLSStrict   // TLS from the first byte (TDS 8.0, LDAPS), verified as TLSVerify
)

// ProxyVersion says whether leproxy sends a tcp route's backend a PROXY
// protocol header. It is dbproxy's type.
type ProxyVersion = dbproxy.ProxyVersion

const (
	ProxyNone = dbproxy.ProxyNone // no header (default)
	ProxyV1   = dbproxy.ProxyV1   // PROXY protocol version 1, text
	ProxyV2   = dbproxy.ProxyV2   // PROXY protocol version 2, binary
)

// Listener is one entry of the "tcp:" section.
type Listener struct {
	Listen   string  // address to listen on, host:port (host may be empty)
	Protocol string  // canonical protocol name, as registered with dbproxy (aliases resolved)
	Default  string  // route used for clients that send no SNI; "" when unset
	Routes   []Route // in file order
	// MaxConns caps concurrent client connections (long key "max_conns");
	// 0 means the listener's default.
	MaxConns int
	// IdleTimeout closes a session with no traffic either way for this long
	// (key "idle_timeout", a Go duration); 0 means the listener's default.
	IdleTimeout time.Duration
	// Options are the listener's protocol-specific keys (FTP's
	// passive_ports), key → value as written, for the protocols that take
	// some (dbproxy.Optioner); each value checked by its protocol. nil for
	// none.
	Options map[string]string
	// Limits are the per-client connection limits and block policy
	// (keys "conn_rate", "conn_burst", "conns_per_client", "block").
	Limits ListenerLimits
	Line   int // line of the list item in File
}

// Route maps one SNI hostname of a tcp listener to a backend.
type Route struct {
	Host    string  // lower-case hostname, always contains a dot
	Backend string  // host:port
	TLS     TLSMode // never empty after Load: TLSNone by default
	CA      string  // PEM file to verify the backend with (TLSVerify); "" for system roots
	// RootCAs holds the certificates of CA, loaded with the mapping; nil
	// for the system roots.
	RootCAs *x509.CertPool
	// AllowPlaintext lets clients that do not ask for TLS through
	// ("plaintext: allow"); by default they are refused in their protocol.
	AllowPlaintext bool
	// ProxyProtocol sends the backend a PROXY protocol header with the
	// client's address ("proxy_protocol: v1" or "v2"); never empty after
	// Load: ProxyNone by default.
	ProxyProtocol ProxyVersion
	Line          int // line of the route's key in File
}
