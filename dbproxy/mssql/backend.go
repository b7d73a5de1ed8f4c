package mssql

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"

	"github.com/leproxy/leproxy/dbproxy"
)

// threadID is the THREADID leproxy's own PRELOGIN sends; servers ignore
// its value.
var threadID = []byte{0, 0, 0, 0}

// isStrict reports whether r's backend speaks TDS 8.0 (tls: strict).
func isStrict(r *dbproxy.Route) bool { return r.TLS == dbproxy.TLSStrict }

// dialBackend connects to r's backend and runs leproxy's own PRELOGIN
// with it: encryption NOT_SUP to a plain backend, ON and the TLS handshake
// wrapped in PRELOGIN packets for tls: verify|insecure, TLS from the first
// byte and then PRELOGIN for tls: strict. mars is asked as the client
// asked. The connection returned carries the session's TDS (TLS over it
// when the route says so); strict reports TDS 8.0.
func (p *protocol) dialBackend(ctx context.Context, s *dbproxy.Session, r *dbproxy.Route, mars byte) (_ net.Conn, strict bool, err error) {
	raw, err := s.Dial(ctx, r)
	if err != nil {
		return nil, false, err
	}
	fail := func(err error) (net.Conn, bool, error) {
		s.SetEnd(dbproxy.ByBackend, dbproxy.ReasonUnreachable)
		return nil, false, err
	}
	var conn net.Conn = raw
	enc := byte(encNotSup)
	var cfg *tls.Config
	if r.TLS.Enabled() {
		cfg = s.BackendTLSConfig(r).Clone()
		// SQL Server expects each TDS packet in one TLS record
		// (go-mssqldb#166).
		cfg.DynamicRecordSizingDisabled = true
		enc = encOn
	}
	if isStrict(r) {
		cfg.NextProtos = []string{alpnTDS8}
		tc := tls.Client(raw, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fail(fmt.Errorf("TLS handshake (TDS 8.0) with backend %s: %w", r.Backend, err))
		}
		conn, enc, strict = tc, encStrict, true
	}
	req := appendPrelogin(nil, []preloginOption{
		{plVersion, proxyVersion},
		{plEncryption, []byte{enc}},
		{plInstOpt, []byte{0}},
		{plThreadID, threadID},
		{plMARS, []byte{mars}},
	})
	if _, err := conn.Write(appendPackets(nil, pktPrelogin, req, backendPacketLen)); err != nil {
		return fail(fmt.Errorf("sending PRELOGIN to backend %s: %w", r.Backend, err))
	}
	resp, err := readMessage(conn, maxPreloginLen)
	if err != nil {
		return fail(fmt.Errorf("reading PRELOGIN answer from backend %s: %w", r.Backend, err))
	}
	if resp.typ != pktReply {
		return fail(fmt.Errorf("backend %s answered PRELOGIN with a packet of type 0x%02x: %w", r.Backend, resp.typ, errMalformed))
	}
	opts, err := parsePrelogin(resp.payload)
	if err != nil {
		return fail(fmt.Errorf("PRELOGIN answer from backend %s: %w", r.Backend, err))
	}
	answer := byte(encNotSup)
	if e, ok := preloginValue(opts, plEncryption); ok && len(e) == 1 {
		answer = e[0] &^ encClientCert
	}
	if m, ok := preloginValue(opts, plMARS); mars != 0 && (!ok || len(m) != 1 || m[0] == 0) {
		return fail(fmt.Errorf("backend %s does not support MARS, which the client asked for", r.Backend))
	}
	switch {
	case strict:
		return conn, true, nil
	case cfg == nil:
		if answer == encOn || answer == encReq {
			return fail(fmt.Errorf("backend %s requires encryption (PRELOGIN answer 0x%02x): set tls: verify on the route", r.Backend, answer))
		}
		return conn, false, nil
	case answer == encNotSup:
		return fail(fmt.Errorf("backend %s does not support encryption (PRELOGIN answer NOT_SUP): use tls: none on the route", r.Backend))
	}
	cfg.NextProtos = nil
	cfg.MaxVersion = tls.VersionTLS12 // #nosec G402 -- a handshake wrapped in PRELOGIN packets stays at TLS 1.2, as drivers do with SQL Server; TDS 8.0 (tls: strict) uses TLS 1.3
	w := newWrapConn(raw, true, backendPacketLen)
	tc := tls.Client(w, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return fail(fmt.Errorf("TLS handshake with backend %s: %w", r.Backend, err))
	}
	if err := w.finish(); err != nil {
		return fail(fmt.Errorf("TLS handshake with backend %s: %w", r.Backend, err))
	}
	return tc, false, nil
}
