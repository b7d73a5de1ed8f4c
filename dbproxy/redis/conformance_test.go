package redis

import (
	"errors"
	"strings"
	"testing"

	"github.com/leproxy/leproxy/dbproxy/dbtest"
)

func TestConformance(t *testing.T) {
	dbtest.Conformance{
		Protocol: "redis",
		// After TLS the session is piped through the RESP scanners, which
		// pass anything that is not RESP through unchanged: the echo's
		// lines come back as they are.
		StartBackend: func(t testing.TB, name string) string {
			return dbtest.StartEcho(t, name, nil).Addr
		},
		// A Redis client learns that its session is up from its first
		// command: a refusal answers it with "-ERR <why> (leproxy)", the
		// echo backend with "name:PING". PING goes as an inline command,
		// which Redis and the refusal accept as RESP and which is one line
		// for the echo.
		Connect: dbtest.LineClient("PING", func(answer string) error {
			if msg, ok := strings.CutPrefix(answer, "-"); ok {
				return errors.New(msg)
			}
			return nil
		}),
	}.Run(t)
}
