package mssql

import (
	"crypto/tls"
	"net"
	"testing"

	"github.com/leproxy/leproxy/dbproxy/dbtest"
	"github.com/leproxy/leproxy/dbproxy/dbtest/tdstest"
)

// The fake backend answers PRELOGIN with NOT_SUP and, after the login,
// echoes lines: once Connect has read the login response the session is a
// line exchange through the byte pump. TLS clients log in as TDS 7.x
// clients do, with TLS inside PRELOGIN packets and their server name
// in LOGIN7 as well as in SNI.
func TestConformance(t *testing.T) {
	dbtest.Conformance{
		Protocol: "mssql",
		StartBackend: func(t testing.TB, name string) string {
			return tdstest.Start(t, &tdstest.Server{Name: name, Echo: true}).Addr
		},
		Connect: func(t testing.TB, conn net.Conn, cfg *tls.Config) (net.Conn, error) {
			o := tdstest.ClientOptions{TLS: cfg, Login: tdstest.LoginInfo{User: "u", Password: "p"}}
			if cfg != nil {
				o.Login.ServerName = cfg.ServerName
			}
			return tdstest.Connect(conn, o)
		},
	}.Run(t)
}
