// Package dbtest is test support shared by dbproxy and its protocol
// packages: a throwaway certificate authority, a Server under test on
// 127.0.0.1 with a JSON log to inspect, fake backends (a line echo server
// and a minimal PostgreSQL server), client-side helpers, and Conformance,
// the suite of behaviours every protocol must show.
//
// It is imported only by tests. It must not import a protocol package: a
// protocol's own tests import it.
package dbtest
