package main

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"time"

	"github.com/leproxy/leproxy/internal/certs"
	"github.com/leproxy/leproxy/internal/hostname"
	"github.com/leproxy/leproxy/internal/logging"
)

// unknownNamesPerMinute is how many different unknown server names the
// HTTPS and tcp listeners together log a minute: enough for a handful of
// misconfigured clients, bounded for a scanner that makes names up.
const unknownNamesPerMinute = 100

func newUnknownNames() *logging.OncePer {
	return logging.NewOncePer(time.Minute, unknownNamesPerMinute)
}

// logUnknownNames wraps get, a GetCertificate of the HTTPS listener
// (protocol "https", or "h3" over QUIC), to log at Info a client refused
// because its server name (SNI) is not in the mapping, or because it sent
// none: once per name per minute (the tcp listeners share names), since a
// refused handshake reaches no other log line above Debug.
func logUnknownNames(get func(*tls.ClientHelloInfo) (*tls.Certificate, error), protocol string, names *logging.OncePer, logger *slog.Logger) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		c, err := get(hello)
		if err == nil || !(errors.Is(err, certs.ErrNotMapped) || errors.Is(err, certs.ErrNoServerName)) {
			return c, err
		}
		name := hostname.Normalize(hello.ServerName)
		ok, unlogged := names.Allow(name)
		if !ok {
			return c, err
		}
		attrs := []any{"protocol", protocol, "sni", name}
		if hello.Conn != nil {
			attrs = append(attrs, "listen", hello.Conn.LocalAddr().String(), "client", hello.Conn.RemoteAddr().String())
		}
		if unlogged > 0 {
			attrs = append(attrs, "unlogged", unlogged)
		}
		logger.Info("unknown server name refused", attrs...)
		return c, err
	}
}
