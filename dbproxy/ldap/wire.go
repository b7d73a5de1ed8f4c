package ldap

import (
	"errors"
	"fmt"
	"io"
)

// The little of LDAP's BER (RFC 4511 section 5.1: definite lengths only)
// that leproxy reads and writes before TLS:
//
//	LDAPMessage ::= SEQUENCE {
//	     messageID       INTEGER (0 .. maxInt),
//	     protocolOp      CHOICE { bindRequest [APPLICATION 0] …, … },
//	     controls        [0] Controls OPTIONAL }
//
//	ExtendedRequest ::= [APPLICATION 23] SEQUENCE {
//	     requestName      [0] LDAPOID,
//	     requestValue     [1] OCTET STRING OPTIONAL }
//
//	ExtendedResponse ::= [APPLICATION 24] SEQUENCE {
//	     COMPONENTS OF LDAPResult,   -- resultCode, matchedDN, diagnosticMessage
//	     responseName     [10] LDAPOID OPTIONAL,
//	     responseValue    [11] OCTET STRING OPTIONAL }

// errMalformed is wrapped by every error about bytes that are not LDAP.
var errMalformed = errors.New("malformed LDAP message")

// BER identifiers.
const (
	tagInteger    = 0x02
	tagOctetStr   = 0x04
	tagEnumerated = 0x0a
	tagSequence   = 0x30
	tagControls   = 0xa0 // [0] constructed, after the protocolOp

	// classApplication and constructed make a protocolOp's tag from its
	// application number.
	classApplication = 0x40
	constructed      = 0x20

	tagExtRequestName  = 0x80 // [0] primitive, in an ExtendedRequest
	tagExtResponseName = 0x8a // [10] primitive, in an ExtendedResponse
)

// protocolOp application numbers (RFC 4511 section 4.2 onwards).
const (
	opBindRequest     = 0
	opBindResponse    = 1
	opUnbindRequest   = 2
	opSearchRequest   = 3
	opSearchDone      = 5
	opModifyRequest   = 6
	opModifyResponse  = 7
	opAddRequest      = 8
	opAddResponse     = 9
	opDelRequest      = 10
	opDelResponse     = 11
	opModDNRequest    = 12
	opModDNResponse   = 13
	opCompareRequest  = 14
	opCompareResponse = 15
	opAbandonRequest  = 16
	opExtendedRequest = 23
	opExtendedResp    = 24
)

// OIDs of the extended operations leproxy speaks.
const (
	oidStartTLS           = "1.3.6.1.4.1.1466.20037"
	oidNoticeOfDisconnect = "1.3.6.1.4.1.1466.20036"
)

// The ExtendedRequest and ExtendedResponse protocolOp tags.
const (
	extendedRequestOpTag  = classApplication | constructed | opExtendedRequest
	extendedResponseOpTag = classApplication | constructed | opExtendedResp
)

// LDAP result codes leproxy sends (RFC 4511 appendix A).
const (
	resultSuccess         = 0
	resultProtocolError   = 2
	resultConfidentiality = 13 // confidentialityRequired
	resultBusy            = 51
	resultUnavailable     = 52
)

// Limits of the reader.
const (
	// maxHeaderLen: SEQUENCE, messageID and protocolOp, a tag and the
	// longest length each, and the longest messageID.
	maxHeaderLen       = 1 + 5 + 1 + 5 + 4 + 1 + 5
	maxLengthOctets    = 4
	maxMessageIDOctets = 4
	maxLength          = 1<<31 - 1
	noticeMessageID    = 0 // the messageID of unsolicited notifications
	// maxRequestNameLen bounds an ExtendedRequest's OID.
	maxRequestNameLen = 128
	// maxDiagnosticForLog bounds a backend's diagnosticMessage in a log.
	maxDiagnosticForLog = 200
)

// A header is the start of one LDAPMessage: its messageID and the tag of
// its protocolOp, and how many bytes of the message follow it.
type header struct {
	raw  []byte // the header's bytes as read, up to the protocolOp's length
	id   int32  // messageID
	op   byte   // protocolOp tag, such as 0x77 for an ExtendedRequest
	opN  int    // length of the protocolOp's contents
	rest int    // bytes of the message after raw: the op's contents, then controls
}

// app returns the header's protocolOp application number, or -1 when the
// tag is not of the application class.
func (h *header) app() int {
	if h.op&0xc0 != classApplication {
		return -1
	}
	return int(h.op & 0x1f)
}

// byteReader reads one byte at a time from r, so that nothing past the
// LDAP header is consumed, and keeps what it read.
type byteReader struct {
	r   io.Reader
	buf []byte
}

func (br *byteReader) byte() (byte, error) {
	var b [1]byte
	if _, err := io.ReadFull(br.r, b[:]); err != nil {
		return 0, err
	}
	br.buf = append(br.buf, b[0])
	return b[0], nil
}

// length reads a BER definite length of at most maxLengthOctets octets.
func (br *byteReader) length() (int, error) {
	b, err := br.byte()
	if err != nil {
		return 0, err
	}
	if b < 0x80 {
		return int(b), nil
	}
	n := int(b & 0x7f)
	if n == 0 {
		return 0, fmt.Errorf("%w: indefinite length", errMalformed)
	}
	if n > maxLengthOctets {
		return 0, fmt.Errorf("%w: length of %d octets", errMalformed, n)
	}
	l := 0
	for range n {
		b, err := br.byte()
		if err != nil {
			return 0, err
		}
		l = l<<8 | int(b)
	}
	if l > maxLength { // lengths beyond 2^31 are no message
		return 0, fmt.Errorf("%w: length %d", errMalformed, l)
	}
	return l, nil
}

// readHeader reads the header of one LDAPMessage from r, byte by byte,
// and nothing more. The message's length, whatever it says, allocates
// nothing: callers bound it before they read the rest.
func readHeader(r io.Reader) (*header, error) {
	br := &byteReader{r: r, buf: make([]byte, 0, maxHeaderLen)}
	h, err := br.header()
	if err != nil {
		if errors.Is(err, errMalformed) {
			return nil, err
		}
		return nil, fmt.Errorf("reading LDAP message: %w", err)
	}
	return h, nil
}

func (br *byteReader) header() (*header, error) {
	tag, err := br.byte()
	if err != nil {
		return nil, err
	}
	if tag != tagSequence {
		return nil, fmt.Errorf("%w: first byte %#02x, want a SEQUENCE (0x30)", errMalformed, tag)
	}
	seqN, err := br.length()
	if err != nil {
		return nil, err
	}
	start := len(br.buf)
	if tag, err = br.byte(); err != nil {
		return nil, err
	}
	if tag != tagInteger {
		return nil, fmt.Errorf("%w: messageID tag %#02x, want INTEGER", errMalformed, tag)
	}
	idN, err := br.length()
	if err != nil {
		return nil, err
	}
	if idN < 1 || idN > maxMessageIDOctets {
		return nil, fmt.Errorf("%w: messageID of %d octets", errMalformed, idN)
	}
	var id int64
	for i := range idN {
		b, err := br.byte()
		if err != nil {
			return nil, err
		}
		if i == 0 && b&0x80 != 0 {
			return nil, fmt.Errorf("%w: negative messageID", errMalformed)
		}
		id = id<<8 | int64(b)
	}
	op, err := br.byte()
	if err != nil {
		return nil, err
	}
	if op&0x1f == 0x1f {
		return nil, fmt.Errorf("%w: protocolOp tag %#02x in high-tag-number form", errMalformed, op)
	}
	opN, err := br.length()
	if err != nil {
		return nil, err
	}
	used := len(br.buf) - start
	if used+opN > seqN {
		return nil, fmt.Errorf("%w: protocolOp of %d bytes in a message of %d", errMalformed, opN, seqN)
	}
	return &header{raw: br.buf, id: int32(id), op: op, opN: opN, rest: seqN - used}, nil
}

// readBody reads the rest of h's message from r, refusing messages whose
// rest is longer than limit before it allocates.
func readBody(r io.Reader, h *header, limit int) ([]byte, error) {
	if h.rest > limit {
		return nil, fmt.Errorf("%w: %d bytes after the header, more than %d", errMalformed, h.rest, limit)
	}
	body := make([]byte, h.rest)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, fmt.Errorf("reading LDAP message: %w", err)
	}
	return body, nil
}

// tlv is one BER element inside a buffer.
type tlv struct {
	tag   byte
	value []byte
}

// nextTLV splits the first element off b.
func nextTLV(b []byte) (tlv, []byte, error) {
	if len(b) < 2 {
		return tlv{}, nil, fmt.Errorf("%w: truncated element", errMalformed)
	}
	tag, l := b[0], int(b[1])
	if tag&0x1f == 0x1f {
		return tlv{}, nil, fmt.Errorf("%w: tag %#02x in high-tag-number form", errMalformed, tag)
	}
	b = b[2:]
	if l >= 0x80 {
		n := l & 0x7f
		if n == 0 || n > maxLengthOctets || n > len(b) {
			return tlv{}, nil, fmt.Errorf("%w: bad length", errMalformed)
		}
		l = 0
		for _, c := range b[:n] {
			l = l<<8 | int(c)
		}
		b = b[n:]
	}
	if l > len(b) {
		return tlv{}, nil, fmt.Errorf("%w: element of %d bytes in %d", errMalformed, l, len(b))
	}
	return tlv{tag: tag, value: b[:l]}, b[l:], nil
}

// checkControls checks that b, what follows a protocolOp in its message,
// is absent or one well-formed [0] Controls element.
func checkControls(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	c, rest, err := nextTLV(b)
	if err != nil {
		return err
	}
	if c.tag != tagControls || len(rest) != 0 {
		return fmt.Errorf("%w: unexpected element %#02x after the protocolOp", errMalformed, c.tag)
	}
	return nil
}

// parseExtendedRequest returns the requestName of an ExtendedRequest
// message whose header was h and whose rest is body, and whether it
// carries a requestValue.
func parseExtendedRequest(h *header, body []byte) (name string, hasValue bool, err error) {
	if h.op != extendedRequestOpTag {
		return "", false, fmt.Errorf("%w: protocolOp %#02x is no ExtendedRequest", errMalformed, h.op)
	}
	op, controls := body[:h.opN], body[h.opN:]
	n, rest, err := nextTLV(op)
	if err != nil {
		return "", false, err
	}
	if n.tag != tagExtRequestName {
		return "", false, fmt.Errorf("%w: ExtendedRequest without requestName", errMalformed)
	}
	if len(n.value) > maxRequestNameLen {
		return "", false, fmt.Errorf("%w: requestName of %d bytes", errMalformed, len(n.value))
	}
	if len(rest) > 0 {
		v, after, err := nextTLV(rest)
		if err != nil {
			return "", false, err
		}
		if v.tag != 0x81 || len(after) != 0 {
			return "", false, fmt.Errorf("%w: unexpected element %#02x in ExtendedRequest", errMalformed, v.tag)
		}
		hasValue = true
	}
	if err := checkControls(controls); err != nil {
		return "", false, err
	}
	return string(n.value), hasValue, nil
}

// An ldapResult is an LDAPResult as a response carries it, and for an
// ExtendedResponse its responseName.
type ldapResult struct {
	id           int32
	op           byte
	code         int
	matchedDN    string
	diagnostic   string
	responseName string
}

// parseResponse parses a response message whose header was h and whose
// rest is body: an LDAPResult, and an ExtendedResponse's responseName.
// Referrals, responseValue and controls are checked for shape and
// skipped.
func parseResponse(h *header, body []byte) (*ldapResult, error) {
	if h.op&0xe0 != classApplication|constructed {
		return nil, fmt.Errorf("%w: protocolOp %#02x is no response", errMalformed, h.op)
	}
	op, controls := body[:h.opN], body[h.opN:]
	res := &ldapResult{id: h.id, op: h.op}
	var fields [3]tlv
	for i, want := range []byte{tagEnumerated, tagOctetStr, tagOctetStr} {
		var err error
		if fields[i], op, err = nextTLV(op); err != nil {
			return nil, err
		}
		if fields[i].tag != want {
			return nil, fmt.Errorf("%w: LDAPResult field %d has tag %#02x, want %#02x", errMalformed, i, fields[i].tag, want)
		}
	}
	code := fields[0].value
	if len(code) < 1 || len(code) > 4 || code[0]&0x80 != 0 {
		return nil, fmt.Errorf("%w: bad resultCode", errMalformed)
	}
	for _, c := range code {
		res.code = res.code<<8 | int(c)
	}
	res.matchedDN, res.diagnostic = string(fields[1].value), string(fields[2].value)
	for len(op) > 0 {
		var e tlv
		var err error
		if e, op, err = nextTLV(op); err != nil {
			return nil, err
		}
		if e.tag == tagExtResponseName && h.op == extendedResponseOpTag {
			res.responseName = string(e.value)
		}
	}
	if err := checkControls(controls); err != nil {
		return nil, err
	}
	return res, nil
}

// appendLength appends a BER definite length.
func appendLength(b []byte, n int) []byte {
	switch {
	case n < 0x80:
		return append(b, byte(n))
	case n <= 0xff:
		return append(b, 0x81, byte(n))
	case n <= 0xffff:
		return append(b, 0x82, byte(n>>8), byte(n))
	default:
		return append(b, 0x84, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}

// appendTLV appends one element.
func appendTLV(b []byte, tag byte, value []byte) []byte {
	return append(appendLength(append(b, tag), len(value)), value...)
}

// appendInt appends an INTEGER or ENUMERATED of a non-negative value in
// its shortest two's complement form.
func appendInt(b []byte, tag byte, v int64) []byte {
	var be []byte
	for v > 0x7f {
		be = append([]byte{byte(v)}, be...)
		v >>= 8
	}
	be = append([]byte{byte(v)}, be...)
	return appendTLV(b, tag, be)
}

// appendMessage appends an LDAPMessage with messageID id and protocolOp
// tag op around contents.
func appendMessage(b []byte, id int32, op byte, contents []byte) []byte {
	var m []byte
	m = appendInt(m, tagInteger, int64(id))
	m = appendTLV(m, op, contents)
	return appendTLV(b, tagSequence, m)
}

// appendResult appends a response message of type op with an LDAPResult
// (no matchedDN) and, when responseName is not "", an ExtendedResponse's
// responseName.
func appendResult(b []byte, id int32, op byte, code int, diagnostic, responseName string) []byte {
	var c []byte
	c = appendInt(c, tagEnumerated, int64(code))
	c = appendTLV(c, tagOctetStr, nil)
	c = appendTLV(c, tagOctetStr, []byte(diagnostic))
	if responseName != "" {
		c = appendTLV(c, tagExtResponseName, []byte(responseName))
	}
	return appendMessage(b, id, op, c)
}

// appendExtendedRequest appends an ExtendedRequest for oid, no value.
func appendExtendedRequest(b []byte, id int32, oid string) []byte {
	return appendMessage(b, id, extendedRequestOpTag, appendTLV(nil, tagExtRequestName, []byte(oid)))
}

// appendNotice appends a Notice of Disconnection (RFC 4511 section
// 4.4.1): an unsolicited ExtendedResponse, messageID 0, telling the client
// that the server ends the session.
func appendNotice(b []byte, code int, diagnostic string) []byte {
	return appendResult(b, noticeMessageID, extendedResponseOpTag, code, diagnostic, oidNoticeOfDisconnect)
}

// responseOp returns the tag of the response to the request with
// application number app, and false for requests that have none (Unbind,
// Abandon) and for what is no request.
func responseOp(app int) (byte, bool) {
	var resp int
	switch app {
	case opBindRequest:
		resp = opBindResponse
	case opSearchRequest:
		resp = opSearchDone
	case opModifyRequest:
		resp = opModifyResponse
	case opAddRequest:
		resp = opAddResponse
	case opDelRequest:
		resp = opDelResponse
	case opModDNRequest:
		resp = opModDNResponse
	case opCompareRequest:
		resp = opCompareResponse
	case opExtendedRequest:
		resp = opExtendedResp
	default:
		return 0, false
	}
	return classApplication | constructed | byte(resp), true
}

// opName names a protocolOp tag for the log.
func opName(op byte) string {
	if op&0xc0 == classApplication {
		switch op & 0x1f {
		case opBindRequest:
			return "BindRequest"
		case opUnbindRequest:
			return "UnbindRequest"
		case opSearchRequest:
			return "SearchRequest"
		case opModifyRequest:
			return "ModifyRequest"
		case opAddRequest:
			return "AddRequest"
		case opDelRequest:
			return "DelRequest"
		case opModDNRequest:
			return "ModifyDNRequest"
		case opCompareRequest:
			return "CompareRequest"
		case opAbandonRequest:
			return "AbandonRequest"
		case opExtendedRequest:
			return "ExtendedRequest"
		}
	}
	return fmt.Sprintf("protocolOp %#02x", op)
}
