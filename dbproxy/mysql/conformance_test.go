package mysql

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/leproxy/leproxy/dbproxy/dbtest"
)

// The command phase is relayed packet by packet (cmd.go), not spliced:
// the client stream reads a packet's header and first payload byte before
// it passes anything on, so a raw line is taken for a packet header and a
// short one ("x\n") stalls there. The exchange is therefore a COM_QUERY
// carrying the message, which the backend answers with one packet,
// "name:message".
func TestConformance(t *testing.T) {
	dbtest.Conformance{
		Protocol: "mysql",
		StartBackend: func(t testing.TB, name string) string {
			return startFakeServer(t, &fakeServer{name: name, users: fakeUsers, echo: true}).addr
		},
		Connect: func(t testing.TB, conn net.Conn, cfg *tls.Config) (net.Conn, error) {
			return connectRaw(conn, cfg, "alice", "alicepw")
		},
		Request: func(msg string) []byte {
			return appendPacket(nil, 0, append([]byte{comQuery}, msg...))
		},
		ReadAnswer: func(r io.Reader) (string, error) {
			pkt, seq, err := readPacket(r, 1<<20)
			if err != nil {
				return "", err
			}
			if seq != 1 {
				return "", fmt.Errorf("answer %q with sequence id %d, want 1", pkt, seq)
			}
			return string(pkt), nil
		},
	}.Run(t)
}

// connectRaw logs in over conn as a MySQL client does: it reads the
// greeting, sends an SSLRequest and runs TLS with cfg (none when cfg is
// nil), sends a HandshakeResponse41 with a mysql_native_password answer
// and follows AuthSwitchRequests for that plugin until the server's OK. A
// refusal is an error carrying the ERR packet's number and message.
func connectRaw(conn net.Conn, cfg *tls.Config, user, password string) (net.Conn, error) {
	var seq byte
	read := func() ([]byte, error) {
		pkt, got, err := readPacket(conn, 1<<20)
		if err != nil {
			return nil, err
		}
		if len(pkt) > 0 && pkt[0] == headerERR {
			// An ERR follows the packet it answers, whatever its id.
			code, _, msg, _ := parseERR(pkt)
			return nil, fmt.Errorf("server error %d: %s", code, msg)
		}
		if got != seq {
			return nil, fmt.Errorf("packet %x has sequence id %d, want %d", pkt, got, seq)
		}
		seq++
		return pkt, nil
	}
	write := func(payload []byte) error {
		err := writePacket(conn, seq, payload)
		seq++
		return err
	}
	pkt, err := read()
	if err != nil {
		return nil, fmt.Errorf("reading the greeting: %w", err)
	}
	g, err := parseGreeting(pkt)
	if err != nil {
		return nil, fmt.Errorf("greeting: %w", err)
	}
	resp := &handshakeResponse{caps: rawClientCaps, maxPacket: 1 << 24, charset: 45, user: user,
		authResp: nativeScramble(password, g.authData), plugin: "mysql_native_password"}
	if cfg != nil {
		resp.caps |= capSSL
		if err := write(resp.appendSSLRequest(nil)); err != nil {
			return nil, err
		}
		tc := tls.Client(conn, cfg)
		if err := tc.Handshake(); err != nil {
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		conn = tc
	}
	if err := write(resp.append(nil)); err != nil {
		return nil, err
	}
	for {
		pkt, err := read()
		if err != nil {
			return nil, err
		}
		switch pkt[0] {
		case headerOK:
			return conn, nil
		case headerAuthSwitch:
			sw, err := parseAuthSwitch(pkt)
			if err != nil {
				return nil, err
			}
			if sw.plugin != "mysql_native_password" {
				return nil, fmt.Errorf("cannot authenticate with %s", sw.plugin)
			}
			if err := write(nativeScramble(password, sw.nonce())); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("unexpected packet %x during authentication", pkt)
		}
	}
}
