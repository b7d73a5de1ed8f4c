package cassandra

import (
	"crypto/tls"
	"net"
	"net/netip"
	"testing"

	"github.com/leproxy/leproxy/dbproxy/dbtest"
	"github.com/leproxy/leproxy/dbproxy/dbtest/cqltest"
)

func TestConformance(t *testing.T) {
	dbtest.Conformance{
		Protocol: "cassandra",
		// A one-node fake cluster that answers any query with "name:query".
		StartBackend: func(t testing.TB, name string) string {
			c := cqltest.Start(t, cqltest.Config{Nodes: []cqltest.Node{{
				Name: name, Addr: netip.MustParseAddrPort("127.0.0.1:0"), HostID: "11111111-1111-4111-8111-111111111111",
			}}})
			return c.Addr(0)
		},
		// A CQL client learns that its session is up from READY; a refusal
		// is an ERROR frame in answer to its first frame.
		Connect: func(t testing.TB, conn net.Conn, cfg *tls.Config) (net.Conn, error) {
			c := conn
			if cfg != nil {
				tc := tls.Client(conn, cfg)
				if err := tc.Handshake(); err != nil {
					return nil, err
				}
				c = tc
			}
			if err := cqltest.Handshake(c); err != nil {
				return nil, err
			}
			return c, nil
		},
		Request:    cqltest.QueryRequest,
		ReadAnswer: cqltest.ReadAnswer,
	}.Run(t)
}
