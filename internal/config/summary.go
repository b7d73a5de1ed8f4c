package config

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// Summary writes a human-readable summary of the mapping to w, for
// "leproxy -check": each HTTP host with its backend, then each tcp
// listener with its routes, in file order.
func (c *Config) Summary(w io.Writer) {
	fmt.Fprintf(w, "%s: %s, %s, %s\n", c.File,
		plural(len(c.Hosts), "HTTP host"), plural(len(c.TCP), "tcp listener"),
		plural(len(c.Hostnames()), "certificate name"))
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	if len(c.Hosts) > 0 {
		fmt.Fprintln(tw, "HTTP hosts:")
	}
	for _, h := range c.Hosts {
		fmt.Fprintf(tw, "  %s\t→ %s\t(%s)\n", h.Name, h.Backend.Raw, strings.Join(hostNotes(h), ", "))
	}
	tw.Flush()
	for _, l := range c.TCP {
		fmt.Fprintf(w, "tcp listener %s, %s", l.Listen, l.Protocol)
		if notes := listenerNotes(l); len(notes) > 0 {
			fmt.Fprintf(w, " (%s)", strings.Join(notes, ", "))
		}
		fmt.Fprintln(w, ":")
		for _, r := range l.Routes {
			fmt.Fprintf(tw, "  %s\t→ %s", r.Host, r.Backend)
			if notes := routeNotes(r, l.Protocol); len(notes) > 0 {
				fmt.Fprintf(tw, "\t(%s)", strings.Join(notes, ", "))
			}
			fmt.Fprintln(tw)
		}
		tw.Flush()
	}
	if len(c.Certificates) > 0 {
		fmt.Fprintln(w, "certificates:")
	}
	for _, r := range c.Certificates {
		fmt.Fprintf(w, "  %s: %s\n", strings.Join(r.Names, ", "), challengeNote(r))
	}
}

// challengeNote describes how a certificates entry's challenge is
// answered; never the secret.
func challengeNote(r CertificateRule) string {
	d := r.DNS
	if d == nil {
		return r.Challenge
	}
	var how string
	if u := d.RFC2136; u != nil {
		how = fmt.Sprintf("RFC 2136 updates to %s, zone %s, TSIG key %s (%s, secret from %s)", u.Server, u.Zone, u.TSIGKey, u.TSIGAlgorithm, u.SecretFrom)
	} else {
		how = "hook " + d.Hook
	}
	if len(d.CheckServers) > 0 {
		how += ", checked on " + strings.Join(d.CheckServers, ", ")
	}
	return r.Challenge + " by " + how
}

// hostNotes describes an HTTP host's backend kind and options.
func hostNotes(h Host) []string {
	var notes []string
	switch h.Backend.Kind {
	case BackendTCP:
		notes = append(notes, "HTTP over TCP")
	case BackendURL:
		notes = append(notes, h.Backend.URL.Scheme+" URL")
	case BackendUnix:
		notes = append(notes, "HTTP over unix socket")
	case BackendAbstract:
		notes = append(notes, "HTTP over abstract unix socket")
	case BackendStatic:
		notes = append(notes, "static files")
	}
	if h.HSTS {
		notes = append(notes, "HSTS")
	}
	if h.RewriteHost {
		notes = append(notes, "Host rewritten to the backend's")
	}
	if h.Middleware != nil {
		notes = append(notes, h.Middleware.notes()...)
	}
	return notes
}

// listenerNotes describes a listener's options.
func listenerNotes(l Listener) []string {
	var notes []string
	if l.Default != "" {
		notes = append(notes, "default "+l.Default)
	}
	if l.MaxConns > 0 {
		notes = append(notes, fmt.Sprintf("max_conns %d", l.MaxConns))
	}
	if l.IdleTimeout > 0 {
		notes = append(notes, "idle_timeout "+l.IdleTimeout.String())
	}
	return notes
}

// routeNotes describes the options of a route of a protocol's listener.
func routeNotes(r Route, protocol string) []string {
	var notes []string
	switch r.TLS {
	case TLSVerify, TLSStrict:
		kind := "TLS"
		if r.TLS == TLSStrict {
			kind = strictProtocols[protocol]
		}
		if r.CA != "" {
			notes = append(notes, kind+" to backend verified with "+r.CA)
		} else {
			notes = append(notes, kind+" to backend verified with system roots")
		}
	case TLSInsecure:
		notes = append(notes, "TLS to backend NOT verified")
	}
	if r.AllowPlaintext {
		notes = append(notes, "plaintext clients allowed")
	}
	if r.ProxyProtocol == ProxyV1 || r.ProxyProtocol == ProxyV2 {
		notes = append(notes, "PROXY protocol "+string(r.ProxyProtocol)+" header to backend")
	}
	return notes
}

// plural returns "1 thing" or "N things".
func plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}
