package ldap

import (
	"testing"

	"github.com/leproxy/leproxy/dbproxy/dbtest"
)

// The fake backend answers an anonymous bind and then echoes lines: once
// Connect has its BindResponse the session is a line exchange through the
// byte pump. TLS clients start with StartTLS.
func TestConformance(t *testing.T) {
	dbtest.Conformance{
		Protocol: "ldap",
		StartBackend: func(t testing.TB, name string) string {
			return startFakeBackend(t, name, nil).addr
		},
		Connect: connect,
	}.Run(t)
}
