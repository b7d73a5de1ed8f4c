package tlsproxy

import (
	"testing"

	"github.com/leproxy/leproxy/dbproxy/dbtest"
)

func TestConformance(t *testing.T) {
	dbtest.Conformance{
		Protocol: "tls",
		StartBackend: func(t testing.TB, name string) string {
			return dbtest.StartEcho(t, name, nil).Addr
		},
		// The protocol inside is unknown to the proxy: nothing tells a
		// refused client why but the close, so a client learns that its
		// session is up from a first exchange.
		Connect: dbtest.LineClient("connect", nil),
		Silent:  true,
	}.Run(t)
}
