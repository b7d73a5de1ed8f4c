package dbproxy

import (
	"context"
	"fmt"
	"net"
	"slices"
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

var registry = struct {
	sync.RWMutex
	m map[string]func() Protocol
}{m: make(map[string]func() Protocol)}

// Register makes a protocol available to Lookup under name. newProtocol
// returns a fresh Protocol value each time, so that each Server has its own
// protocol state. Register panics if name is empty or already registered;
// it is meant to be called from init functions.
func Register(name string, newProtocol func() Protocol) {
	registry.Lock()
	defer registry.Unlock()
	if name == "" || newProtocol == nil {
		panic("dbproxy: Register with an empty name or a nil function")
	}
	if _, dup := registry.m[name]; dup {
		panic(fmt.Sprintf("dbproxy: protocol %q registered twice", name))
	}
	registry.m[name] = newProtocol
}

// Lookup returns a new value of the protocol registered under name, for
// one Server. Names are canonical ("postgres"); aliases are the caller's.
func Lookup(name string) (Protocol, bool) {
	registry.RLock()
	f, ok := registry.m[name]
	registry.RUnlock()
	if !ok {
		return nil, false
	}
	return f(), true
}

// Protocols lists the registered protocol names, sorted.
func Protocols() []string {
	registry.RLock()
	defer registry.RUnlock()
	names := make([]string, 0, len(registry.m))
	for name := range registry.m {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}
