package dbproxy

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
)

// A Protocol brings a client connection from its first byte to the point
// where the client and a backend connection can be piped verbatim.
//
// Handshake runs under ctx, which carries the Server's handshake deadline;
// client already has that deadline set. It speaks the protocol's pre-TLS
// exchange on client, performs the TLS handshake with s.TLSConfig, resolves
// the route with s.Route, dials it with s.Dial and returns the client side
// (usually a *tls.Conn over client) and the backend side, with nothing
// buffered on either that the other has not been sent. The Server then
// clears the deadlines and pumps bytes between them.
//
// On failure Handshake tells the client why in the client's own protocol
// (a PostgreSQL ErrorResponse, a MySQL ERR packet…) and returns the error;
// the Server closes every connection. Handshake returns nil, nil, nil when it
// has completed the connection's business itself and there is nothing to
// pump (a PostgreSQL CancelRequest).
//
// A Protocol value may keep state shared by the connections of one Server
// (PostgreSQL's cancel keys) and must be safe for concurrent use.
type Protocol interface {
	// Name is the protocol's registered name, such as "postgres".
	Name() string
	// ALPN lists the protocol's own ALPN identifiers, offered by the
	// Server's TLS config and to TLS backends; nil for none. Never "h2":
	// Go's TLS server rejects a client whose ALPN list shares nothing with
	// the server's, and a database client must not be told it speaks HTTP.
	ALPN() []string
	// Handshake prepares one connection; see the type's documentation.
	Handshake(ctx context.Context, client net.Conn, s *Session) (c, b net.Conn, err error)
}

// A Refuser is a Protocol that can tell a client, in its protocol, that
// the Server refuses it before any exchange (ErrTooManyConnections). Refuse
// writes the message to client, which has a short write deadline, and
// returns; the Server closes the connection.
type Refuser interface {
	Refuse(client net.Conn, reason error)
}

// A RoutesWatcher is a Protocol that keeps state derived from the
// Server's routes (Redis Cluster's node map). RoutesChanged is called with
// the route table when the Server is created and again after every
// SetRoutes, just after the new routes took effect: a session that began
// in between may still see state built from the old routes, and sessions
// call the Protocol concurrently.
type RoutesWatcher interface {
	RoutesChanged(routes []Route)
}

// An EndReporter is a connection a Protocol's Handshake returns that
// knows from the protocol who ended the session: a PostgreSQL client that
// sent Terminate quit, even when the backend's close reached leproxy
// before the client's. When the pump ends the Server asks the client side
// and then the backend side, and an answer replaces its own guess from
// which side closed first (not the idle timeout or a shutdown, which it
// sees itself).
type EndReporter interface {
	SessionEnd() (End, bool)
}

type registration struct {
	name        string
	newProtocol func() Protocol
}

var registry = struct {
	sync.RWMutex
	m       map[string]registration // canonical names and aliases
	names   []string                // canonical names, sorted
	aliases map[string]string       // alias → canonical name
}{m: make(map[string]registration), aliases: make(map[string]string)}

// Register makes a protocol available to Lookup under name and under each
// of aliases (alternative spellings a mapping may use, such as "mariadb"
// for "mysql"). Names are lower case. newProtocol returns a fresh Protocol
// value each time, so that each Server has its own protocol state.
// Register panics if a name is empty, not lower case or already taken; it
// is meant to be called from init functions.
func Register(name string, newProtocol func() Protocol, aliases ...string) {
	registry.Lock()
	defer registry.Unlock()
	if newProtocol == nil {
		panic("dbproxy: Register with a nil function")
	}
	names := append([]string{name}, aliases...)
	for _, n := range names {
		if n == "" || n != strings.ToLower(n) {
			panic(fmt.Sprintf("dbproxy: Register: protocol name %q is empty or not lower case", n))
		}
		if _, dup := registry.m[n]; dup {
			panic(fmt.Sprintf("dbproxy: protocol %q registered twice", n))
		}
	}
	reg := registration{name: name, newProtocol: newProtocol}
	for _, n := range names {
		registry.m[n] = reg
	}
	for _, a := range aliases {
		registry.aliases[a] = name
	}
	registry.names = append(registry.names, name)
	slices.Sort(registry.names)
}

// Lookup returns a new value of the protocol registered under name, an
// alias or the canonical name in any case, for one Server.
func Lookup(name string) (Protocol, bool) {
	registry.RLock()
	reg, ok := registry.m[strings.ToLower(name)]
	registry.RUnlock()
	if !ok {
		return nil, false
	}
	return reg.newProtocol(), true
}

// Canonical returns the canonical name of the protocol registered under
// name (an alias or the canonical name, in any case).
func Canonical(name string) (string, bool) {
	registry.RLock()
	defer registry.RUnlock()
	reg, ok := registry.m[strings.ToLower(name)]
	return reg.name, ok
}

// Protocols lists the registered canonical protocol names, sorted.
func Protocols() []string {
	registry.RLock()
	defer registry.RUnlock()
	return slices.Clone(registry.names)
}

// Aliases maps each registered alias to its canonical name.
func Aliases() map[string]string {
	registry.RLock()
	defer registry.RUnlock()
	return maps.Clone(registry.aliases)
}
