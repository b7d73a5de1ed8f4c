// Package dbproxy is the core of leproxy's TLS termination for databases
// and other TCP services: what every protocol shares. The protocols live in
// packages of their own under it (postgres, mysql, mssql, redis,
// memcached, mongodb, amqp, elasticsearch, cassandra, ftp, kafka, ldap,
// smtp, tlsproxy), each registering itself; dbproxy/all imports them all.
//
// # The shape
//
// A Server listens on one address for one Protocol, with a table of Routes
// (a TLS server name → a backend address, plaintext or TLS to it). For
// every client connection it makes a Session and calls the Protocol's
// Handshake under the handshake deadline. The Protocol runs its pre-TLS
// exchange (a PostgreSQL SSLRequest, a MySQL greeting, nothing for a
// TLS-first protocol), the TLS handshake (Session.ServerHandshake), picks
// the route by the client's server name (Session.Route), dials the backend
// (Session.Dial, DialBackend, StartBackendTLS) and returns the client and
// backend connections. The Server then clears the deadlines and pipes bytes
// both ways with a pump that half-closes each direction, splices when both
// ends are plain TCP, counts bytes per route and ends the session after the
// idle timeout. It logs one "session end" line per connection, keeps
// Stats and tells a SessionObserver, if any, of each session's start and
// end (leproxy's tracing spans). Shutdown stops accepting, lets sessions end and, when its context
// runs out, closes them with everything they own.
//
// The Server knows nothing of leproxy's mapping file or certificate
// manager: the caller translates its configuration into a Config and passes
// a GetCertificate function. Clients that send no SNI use the Config's
// Default route; a server name that matches no route gets the default's
// certificate and then a protocol-level error, and never reaches another
// host's backend.
//
// # What a Protocol must do
//
//   - Name and ALPN: its registered name and its own ALPN identifiers
//     (never "h2").
//   - Handshake: bound every read from the client before allocating, refuse
//     a repeated upgrade request and bytes pipelined behind one
//     (PendingInput), tell the client why it is refused in its own protocol
//     before returning the error, and return connections with nothing
//     buffered that the other side has not been sent. Return nil, nil, nil
//     for a connection it completed itself with nothing to pipe (a
//     PostgreSQL CancelRequest); call Session.Serve and return its error for
//     a session it serves itself (Elasticsearch proxies HTTP requests one by
//     one; FTP has data connections, for which Session.Pump and
//     Session.Listen are there).
//   - Optionally Refuser, to tell a client over MaxConns so in its protocol
//     (it is given ErrTooManyConnections, or ErrClientLimited, which wraps
//     it, for a client its per-client Guard refuses), RoutesWatcher, to
//     rebuild state derived from the routes when a reload changes them
//     (Redis Cluster's node map), and Optioner, to take listener options of
//     its own: extra keys of its tcp listeners in the mapping, carried as
//     strings through Config.Options (FTP's passive_ports). The mapping
//     accepts those keys on that protocol's listeners only and checks their
//     values with the Protocol as it loads.
//   - Be safe for concurrent use: one value serves every session of one
//     Server and may keep state shared by them (PostgreSQL's cancel keys).
//
// What the Session gives it: the TLS config and handshake, the route table
// (Routes, DefaultRoute, Route, Routed) and listener address (ListenerAddr,
// ListenerPort) for protocols that rewrite backend addresses, dialling with
// the route's backend TLS and PROXY protocol header, connections and
// listeners the core closes on a forced shutdown, end-of-session hooks and
// log attributes, the timeouts, and AuthFailed, for a protocol that reads
// the backend's answer to a login: call it when the backend refuses the
// client's password (before telling the client), so that a Guard can block
// a password-guessing client.
// TLS-first protocols share TLSFirst (peek at the first byte, TLS, route,
// dial) and say only how to refuse a client.
//
// # Adding a protocol
//
//  1. Read its research notes (../shared/research/) and make a directory
//     dbproxy/<name> with a package doc saying how its upgrade works.
//  2. Write the Protocol: a type with Name, ALPN and Handshake, and the wire
//     codec it needs in its own files (or a subpackage), every parser of
//     client bytes with a fuzz target beside it.
//  3. Register it in an init function: Register("name", constructor,
//     aliases...). The mapping accepts exactly the registered names and
//     aliases.
//  4. Add one import line to dbproxy/all.
//  5. Test it: a TestConformance running dbtest.Conformance (routing, the
//     default route, refusals in the protocol's words, the plaintext policy,
//     MaxConns, the handshake deadline, half-close, shutdown) with a fake or
//     real backend, unit tests with dbtest's helpers, and integration tests
//     against the real server started through internal/testenv and driven by
//     the real client library, skipped when the server is not installed and
//     failed with LEPROXY_INTEGRATION=require.
//
// Nothing else changes: not this package, not another protocol's, not the
// main package. If a protocol needs more of the core, grow the Session's
// API here, documented, rather than reaching around it.
//
// Test support shared by the protocol packages is in dbproxy/dbtest (a test
// CA, a Server under test with its JSON log, fake backends, the conformance
// suite) and dbproxy/dbtest/pgtest (a fake PostgreSQL server).
package dbproxy
