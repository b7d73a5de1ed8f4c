package ldap

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// firstMessageSeeds are what clients send first: StartTLS as go-ldap and
// libldap encode it (libldap with four-octet lengths), a bind, a search.
func firstMessageSeeds() [][]byte {
	return [][]byte{
		appendExtendedRequest(nil, 1, oidStartTLS),
		{0x30, 0x84, 0x00, 0x00, 0x00, 0x21, 0x02, 0x01, 0x01, 0x77, 0x84, 0x00, 0x00, 0x00, 0x18, 0x80, 0x16,
			'1', '.', '3', '.', '6', '.', '1', '.', '4', '.', '1', '.', '1', '4', '6', '6', '.', '2', '0', '0', '3', '7'},
		startTLSWithControls(3, nil),
		bindRequest(2),
		appendMessage(nil, 300, classApplication|constructed|opSearchRequest, []byte{0x04, 0x00}),
		{0x30, 0x84, 0x7f, 0xff, 0xff, 0xff, 0x02, 0x01, 0x06, 0x77, 0x84, 0x7f, 0xff, 0xff, 0xf0},
		[]byte("GET / HTTP/1.1\r\n"),
	}
}

// FuzzFirstMessage: reading the client's first message never panics,
// reads the header and nothing past it, never allocates past its limit, and
// a StartTLS request that parses survives a round trip.
func FuzzFirstMessage(f *testing.F) {
	for _, s := range firstMessageSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		h, err := readHeader(r)
		if err != nil {
			if !errors.Is(err, errMalformed) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("error %v is neither malformed nor a short read", err)
			}
			return
		}
		read := len(b) - r.Len()
		if read != len(h.raw) || !bytes.Equal(h.raw, b[:read]) || read > maxHeaderLen {
			t.Fatalf("header of %d bytes %x; the reader consumed %d of %x", len(h.raw), h.raw, read, b)
		}
		if h.id < 0 || h.opN < 0 || h.rest < h.opN {
			t.Fatalf("header %+v", h)
		}
		body, err := readBody(r, h, maxFirstMessage)
		if err != nil {
			if h.rest <= maxFirstMessage && h.rest <= r.Len() {
				t.Fatalf("readBody: %v with %d of %d bytes there", err, r.Len(), h.rest)
			}
			return
		}
		if len(body) != h.rest || !bytes.Equal(body, b[read:read+h.rest]) {
			t.Fatal("body is not the stream's next bytes")
		}
		if h.op != extendedRequestOpTag {
			return
		}
		name, hasValue, err := parseExtendedRequest(h, body)
		if err != nil {
			if !errors.Is(err, errMalformed) {
				t.Fatalf("error %v does not wrap errMalformed", err)
			}
			return
		}
		if hasValue {
			return
		}
		again := appendExtendedRequest(nil, h.id, name)
		r2 := bytes.NewReader(again)
		h2, err := readHeader(r2)
		if err != nil {
			t.Fatalf("re-encoded request: %v", err)
		}
		body2, err := readBody(r2, h2, len(again))
		if err != nil {
			t.Fatalf("re-encoded request: %v", err)
		}
		if name2, _, err := parseExtendedRequest(h2, body2); err != nil || name2 != name || h2.id != h.id {
			t.Fatalf("round trip: %q, id %d, %v; want %q, id %d", name2, h2.id, err, name, h.id)
		}
	})
}

// FuzzStartTLSResponse: a backend's answer to StartTLS never panics the
// reader, and what parses survives a round trip through appendResult.
func FuzzStartTLSResponse(f *testing.F) {
	f.Add(appendResult(nil, 1, extendedResponseOpTag, resultSuccess, "", oidStartTLS))
	f.Add(appendResult(nil, 1, extendedResponseOpTag, resultUnavailable, "Could not initialize TLS", ""))
	f.Add(appendNotice(nil, resultProtocolError, "bye"))
	f.Add(appendResult(nil, 1, classApplication|constructed|opBindResponse, resultSuccess, "", ""))
	f.Add(append(appendResult(nil, 1, extendedResponseOpTag, resultSuccess, "", oidStartTLS), 0x16, 0x03, 0x01))
	f.Fuzz(func(t *testing.T, b []byte) {
		res, err := readStartTLSResponse(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, errMalformed) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("error %v is neither malformed nor a short read", err)
			}
			return
		}
		if res.op != extendedResponseOpTag || (res.id != backendStartTLSID && res.id != noticeMessageID) {
			t.Fatalf("accepted %+v", res)
		}
		again, err := readStartTLSResponse(bytes.NewReader(appendResult(nil, res.id, res.op, res.code, res.diagnostic, res.responseName)))
		if err != nil {
			t.Fatalf("re-encoded %+v: %v", res, err)
		}
		if again.code != res.code || again.diagnostic != res.diagnostic || again.responseName != res.responseName {
			t.Fatalf("round trip: %+v, want %+v", again, res)
		}
	})
}

// The four-octet-length seed is a well-formed StartTLS request.
func TestLongFormSeed(t *testing.T) {
	b := firstMessageSeeds()[1]
	r := bytes.NewReader(b)
	h, err := readHeader(r)
	if err != nil {
		t.Fatal(err)
	}
	body, err := readBody(r, h, maxFirstMessage)
	if err != nil || r.Len() != 0 {
		t.Fatalf("body: %v, %d bytes left", err, r.Len())
	}
	if name, _, err := parseExtendedRequest(h, body); err != nil || name != oidStartTLS {
		t.Fatalf("got %q, %v", name, err)
	}
}
