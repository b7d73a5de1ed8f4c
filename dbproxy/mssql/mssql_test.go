package mssql

import (
	"errors"
	"strings"
	"testing"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
	"github.com/leproxy/leproxy/dbproxy/dbtest/tdstest"
)

// A first packet that is no PRELOGIN is a protocol violation, told in TDS.
func TestMalformedFirstPacket(t *testing.T) {
	be := tdstest.Start(t, &tdstest.Server{Name: "db"})
	p := dbtest.StartProtocol(t, dbtest.NewCA(t), "mssql", "db.test", dbproxy.Route{Host: "db.test", Backend: be.Addr})
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"SQLBatch", tdstest.Packets(tdstest.PacketBatch, []byte("select"), 512), "want PRELOGIN"},
		{"BadOptionTable", tdstest.Packets(tdstest.PacketPrelogin, []byte{0x00, 0x00, 0xff, 0x00, 0x06}, 512), "outside its 5 bytes"},
		{"ShortPacket", []byte{0x12, 0x01, 0x00, 0x04, 0, 0, 0, 0}, "shorter than its header"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := p.Dial(t)
			dbtest.MustWrite(t, c, tc.in)
			_, _, reply, err := tdstest.ReadMessage(c, 1<<16)
			if err != nil {
				t.Fatalf("reading the answer: %v", err)
			}
			se := tdstest.FirstError(reply)
			if se == nil || se.Number != errRefused || se.State != 2 || se.Server != "leproxy" {
				t.Fatalf("answer %+v, want leproxy's error 50000 state 2", se)
			}
			if !strings.Contains(se.Message, "protocol violation") || !strings.Contains(se.Message, tc.want) {
				t.Errorf("message %q", se.Message)
			}
		})
	}
	if e := p.SessionError(t); e == "" {
		t.Error("no session error logged")
	}
}

// Windows authentication is refused before any backend is dialled.
func TestIntegratedAuthRefused(t *testing.T) {
	be := tdstest.Start(t, &tdstest.Server{Name: "db"})
	p := dbtest.StartProtocol(t, dbtest.NewCA(t), "mssql", "", dbproxy.Route{Host: "db.test", Backend: be.Addr})
	login := tdstest.Login7(tdstest.LoginInfo{TDSVersion: tdsVersion74, PacketSize: 4096})
	login[loginOptFlags2] |= optIntSecurity
	l, err := parseLogin7(login)
	if err != nil || !l.integrated {
		t.Fatalf("parseLogin7 = %+v, %v; want integrated", l, err)
	}
	_, err = tdstest.Connect(p.Dial(t), tdstest.ClientOptions{
		TLS:   p.CA.ClientConfig("db.test", "db.test"),
		Login: tdstest.LoginInfo{User: "x", ServerName: "db.test"},
		Raw7:  login,
	})
	var se *tdstest.ServerError
	if !errors.As(err, &se) || se.State != 3 || !strings.Contains(se.Message, "Windows authentication") {
		t.Fatalf("Connect = %v, want leproxy's refusal of Windows authentication", err)
	}
	if n := len(be.Logins()); n != 0 {
		t.Errorf("backend saw %d logins, want none", n)
	}
}
