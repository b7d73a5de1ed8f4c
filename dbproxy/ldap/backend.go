package ldap

import (
	"context"
	"fmt"
	"io"
	"net"

	"github.com/leproxy/leproxy/dbproxy"
)

// backendStartTLSID is the messageID of leproxy's StartTLS request to a
// backend. The operation completes before the client's first request
// reaches the backend, so the client may use the same ID again.
const backendStartTLSID = 1

// maxBackendResponse bounds the backend's answer to StartTLS: an
// ExtendedResponse with a diagnostic message and perhaps referrals.
const maxBackendResponse = 16 << 10

// dialBackend connects to r's backend: in plaintext (TLSNone), with LDAPS,
// TLS from the first byte (TLSStrict), or with a StartTLS of leproxy's own
// (TLSVerify, TLSInsecure).
func dialBackend(ctx context.Context, s *dbproxy.Session, r *dbproxy.Route) (net.Conn, error) {
	b, err := s.Dial(ctx, r)
	if err != nil || !r.TLS.Enabled() {
		return b, err
	}
	if r.TLS != dbproxy.TLSStrict {
		if err := backendStartTLS(b, r.Backend); err != nil {
			s.SetEnd(dbproxy.ByBackend, dbproxy.ReasonUnreachable)
			return nil, err
		}
	}
	return s.StartBackendTLS(ctx, b, r)
}

// backendStartTLS sends a StartTLS request on b, the connection to
// backend, and reads its answer, exactly: what follows is TLS.
func backendStartTLS(b io.ReadWriter, backend string) error {
	if _, err := b.Write(appendExtendedRequest(nil, backendStartTLSID, oidStartTLS)); err != nil {
		return fmt.Errorf("sending StartTLS to backend %s: %w", backend, err)
	}
	res, err := readStartTLSResponse(b)
	if err != nil {
		return fmt.Errorf("reading the StartTLS answer of backend %s: %w", backend, err)
	}
	if res.code != resultSuccess {
		return fmt.Errorf("backend %s refused StartTLS: result code %d: %.*q", backend, res.code,
			maxDiagnosticForLog, res.diagnostic)
	}
	return nil
}

// readStartTLSResponse reads a backend's answer to a StartTLS request
// with messageID backendStartTLSID: an ExtendedResponse, or a Notice of
// Disconnection when the backend ends the session instead.
func readStartTLSResponse(r io.Reader) (*ldapResult, error) {
	h, err := readHeader(r)
	if err != nil {
		return nil, err
	}
	if h.op != extendedResponseOpTag {
		return nil, fmt.Errorf("%w: %s in answer to StartTLS", errMalformed, opName(h.op))
	}
	body, err := readBody(r, h, maxBackendResponse)
	if err != nil {
		return nil, err
	}
	res, err := parseResponse(h, body)
	if err != nil {
		return nil, err
	}
	switch {
	case h.id == noticeMessageID && res.code == resultSuccess:
		return nil, fmt.Errorf("%w: notice of disconnection with result success", errMalformed)
	case h.id != noticeMessageID && h.id != backendStartTLSID:
		return nil, fmt.Errorf("%w: answer with messageID %d, want %d", errMalformed, h.id, backendStartTLSID)
	}
	return res, nil
}
