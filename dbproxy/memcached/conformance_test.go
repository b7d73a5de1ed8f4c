package memcached

import (
	"errors"
	"strings"
	"testing"

	"github.com/leproxy/leproxy/dbproxy/dbtest"
)

func TestConformance(t *testing.T) {
	dbtest.Conformance{
		Protocol: "memcached",
		// The session is piped verbatim after TLS.
		StartBackend: func(t testing.TB, name string) string {
			return dbtest.StartEcho(t, name, nil).Addr
		},
		// A memcached client learns that its session is up from its first
		// command: a refusal answers "version" with SERVER_ERROR and the
		// reason, the echo backend with "name:version".
		Connect: dbtest.LineClient("version", func(answer string) error {
			if strings.HasPrefix(answer, "SERVER_ERROR ") {
				return errors.New(answer)
			}
			return nil
		}),
	}.Run(t)
}
