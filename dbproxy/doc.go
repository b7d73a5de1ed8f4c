// Package dbproxy terminates TLS in front of databases and other TCP
// services that negotiate TLS inside their own protocol.
//
// A Server listens on one address for one Protocol. For every client
// connection the Protocol runs the protocol's own pre-TLS exchange (a
// PostgreSQL SSLRequest, a MySQL greeting, an SMTP STARTTLS…), performs the
// TLS handshake with the Server's certificate source, picks a Route by the
// client's SNI server name, dials the route's backend (in plaintext, or over
// TLS when the route says so) and hands both connections back. The Server
// then copies bytes both ways with a pump that half-closes each direction and
// lets io.Copy use splice(2) when both ends are plain TCP.
//
// Protocols register themselves by name (Register, Lookup, Protocols); one
// file each: postgres.go, mysql.go, redis.go, memcached.go, mongodb.go,
// amqp.go, elasticsearch.go and tlsproto.go (any TLS-first service). Clients that send no SNI use the Config's Default route;
// a server name that matches no route gets a protocol-level error and never
// reaches another host's backend.
//
// The package knows nothing of leproxy's mapping file or certificate
// manager: the caller translates its configuration into a Config and passes
// a GetCertificate function.
package dbproxy
