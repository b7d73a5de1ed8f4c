//lint:file-ignore SA1019 OP_QUERY is deprecated, but drivers still open with a legacy isMaster in one, which leproxy must read and answer.

package mongodb

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/wiremessage"
)

// Client messages are built with the driver's own wire message and BSON
// code, so that leproxy's reading of them is checked against the driver's
// writing.

func bsonDoc(t testing.TB, d bson.D) []byte {
	t.Helper()
	b, err := bson.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// buildOpMsg is an OP_MSG: an optional document sequence, then the
// command document, then an optional checksum.
func buildOpMsg(requestID int32, cmd []byte, seq string, checksum bool) []byte {
	idx, b := wiremessage.AppendHeaderStart(nil, requestID, 0, wiremessage.OpMsg)
	var flags wiremessage.MsgFlag
	if checksum {
		flags |= wiremessage.ChecksumPresent
	}
	b = wiremessage.AppendMsgFlags(b, flags)
	if seq != "" {
		b = wiremessage.AppendMsgSectionType(b, wiremessage.DocumentSequence)
		doc := bsoncore.NewDocumentBuilder().AppendInt32("x", 1).Build()
		b = binary.LittleEndian.AppendUint32(b, uint32(4+len(seq)+1+len(doc)))
		b = append(append(b, seq...), 0)
		b = append(b, doc...)
	}
	b = wiremessage.AppendMsgSectionType(b, wiremessage.SingleDocument)
	b = append(b, cmd...)
	if checksum {
		b = binary.LittleEndian.AppendUint32(b, 0xdeadbeef)
	}
	return bsoncore.UpdateLength(b, idx, int32(len(b)-int(idx)))
}

// buildOpMsgReply is a server's OP_MSG reply to request responseTo,
// holding the document doc.
func buildOpMsgReply(responseTo int32, doc []byte) []byte {
	idx, b := wiremessage.AppendHeaderStart(nil, wiremessage.NextRequestID(), responseTo, wiremessage.OpMsg)
	b = wiremessage.AppendMsgFlags(b, 0)
	b = wiremessage.AppendMsgSectionType(b, wiremessage.SingleDocument)
	b = append(b, doc...)
	return bsoncore.UpdateLength(b, idx, int32(len(b)-int(idx)))
}

// buildOpQuery is a legacy OP_QUERY command, as the drivers' first hello.
func buildOpQuery(requestID int32, ns string, cmd []byte) []byte {
	idx, b := wiremessage.AppendHeaderStart(nil, requestID, 0, wiremessage.OpQuery)
	b = wiremessage.AppendQueryFlags(b, 0)
	b = wiremessage.AppendQueryFullCollectionName(b, ns)
	b = wiremessage.AppendQueryNumberToSkip(b, 0)
	b = wiremessage.AppendQueryNumberToReturn(b, -1)
	b = append(b, cmd...)
	return bsoncore.UpdateLength(b, idx, int32(len(b)-int(idx)))
}

func TestParseMongoHeader(t *testing.T) {
	hello := buildOpMsg(7, bsonDoc(t, bson.D{{Key: "hello", Value: 1}}), "", false)
	header := func(length, requestID, responseTo, opCode int32) []byte {
		return wiremessage.AppendHeader(nil, length, requestID, responseTo, wiremessage.OpCode(opCode))
	}
	tests := []struct {
		name    string
		in      []byte
		want    msgHeader
		wantErr bool
	}{
		{"OP_MSG hello", hello[:16], msgHeader{length: int32(len(hello)), requestID: 7, opCode: opMsg}, false},
		{"OP_QUERY", header(100, 1, 0, opQuery), msgHeader{length: 100, requestID: 1, opCode: opQuery}, false},
		{"largest message", header(maxMessage, 1, 0, opMsg), msgHeader{length: maxMessage, requestID: 1, opCode: opMsg}, false},
		{"too long", header(maxMessage+1, 1, 0, opMsg), msgHeader{}, true},
		{"negative length", header(-1, 1, 0, opMsg), msgHeader{}, true},
		{"shorter than a command", header(25, 1, 0, opMsg), msgHeader{}, true},
		{"OP_COMPRESSED first", header(100, 1, 0, 2012), msgHeader{}, true},
		{"a reply", header(100, 1, 0, opReply), msgHeader{}, true},
		{"responseTo set", header(100, 1, 5, opMsg), msgHeader{}, true},
		{"HTTP", []byte("GET / HTTP/1.1\r\nHo"), msgHeader{}, true},
		{"short", hello[:15], msgHeader{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseHeader(tt.in)
			if tt.wantErr {
				if !errors.Is(err, errNotMongo) {
					t.Errorf("got %+v, %v; want errNotMongo", got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestMongoCommandName(t *testing.T) {
	hello := bsonDoc(t, bson.D{{Key: "hello", Value: 1}, {Key: "$db", Value: "admin"}})
	isMaster := bsonDoc(t, bson.D{{Key: "isMaster", Value: 1}, {Key: "client", Value: bson.D{{Key: "driver", Value: "x"}}}})
	insert := bsonDoc(t, bson.D{{Key: "insert", Value: "c"}, {Key: "$db", Value: "d"}})
	empty := bsonDoc(t, bson.D{})
	body := func(msg []byte) []byte { return msg[headerLen:] }
	tests := []struct {
		name   string
		opCode int32
		body   []byte
		want   string // "" for an error
	}{
		{"OP_MSG", opMsg, body(buildOpMsg(1, hello, "", false)), "hello"},
		{"OP_MSG with checksum", opMsg, body(buildOpMsg(1, hello, "", true)), "hello"},
		{"OP_MSG sequence first", opMsg, body(buildOpMsg(1, insert, "documents", false)), "insert"},
		{"OP_QUERY", opQuery, body(buildOpQuery(1, "admin.$cmd", isMaster)), "isMaster"},
		{"empty command", opMsg, body(buildOpMsg(1, empty, "", false)), ""},
		{"truncated command", opMsg, body(buildOpMsg(1, hello, "", false))[:10], ""},
		{"no flags", opMsg, []byte{1, 2}, ""},
		{"unknown section kind", opMsg, append([]byte{0, 0, 0, 0, 2}, hello...), ""},
		{"sequence overruns", opMsg, []byte{0, 0, 0, 0, 1, 0xff, 0, 0, 0, 'x', 0}, ""},
		{"sequence size below 4", opMsg, []byte{0, 0, 0, 0, 1, 3, 0, 0, 0, 'x', 0}, ""},
		{"only a sequence", opMsg, []byte{0, 0, 0, 0, 1, 4, 0, 0, 0}, ""},
		{"checksum only", opMsg, []byte{1, 0, 0, 0}, ""},
		{"OP_QUERY unterminated name", opQuery, []byte{0, 0, 0, 0, 'a', 'b'}, ""},
		{"OP_QUERY no query", opQuery, []byte{0, 0, 0, 0, 'a', 0, 0, 0, 0, 0}, ""},
		{"document length lies", opMsg, append([]byte{0, 0, 0, 0, 0}, 0x40, 0, 0, 0, 0x10, 'a', 0, 1, 0, 0, 0, 0), ""},
		{"document not NUL-terminated", opMsg, append([]byte{0, 0, 0, 0, 0}, 12, 0, 0, 0, 0x10, 'a', 0, 1, 0, 0, 0, 1), ""},
		{"other opcode", 2012, body(buildOpMsg(1, hello, "", false)), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := commandName(tt.opCode, tt.body)
			if tt.want == "" {
				if err == nil {
					t.Errorf("got %q, want an error", got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestReadMongoFirstMessage(t *testing.T) {
	hello := buildOpMsg(42, bsonDoc(t, bson.D{{Key: "hello", Value: 1}}), "", false)
	big := buildOpMsg(43, bsonDoc(t, bson.D{{Key: "hello", Value: 1}, {Key: "pad", Value: strings.Repeat("x", maxFirstMessage)}}), "", false)
	tests := []struct {
		name     string
		start    int // bytes of the message read before
		in       []byte
		wantID   int32
		wantCmd  string
		wantRead int // bytes read from the reader, at most
		wantErr  bool
	}{
		{"whole", 0, hello, 42, "hello", len(hello), false},
		{"three bytes read before", 3, hello, 42, "hello", len(hello) - 3, false},
		{"longer than the limit: header only", 0, big, 43, "", headerLen, false},
		{"body cut short", 0, hello[:len(hello)-1], 0, "", len(hello), true},
		{"not MongoDB", 0, []byte("GET / HTTP/1.1\r\n\r\n"), 0, "", headerLen, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := bytes.NewReader(tt.in[tt.start:])
			h, cmd, err := readFirstMessage(r, tt.in[:tt.start])
			if read := len(tt.in) - tt.start - r.Len(); read > tt.wantRead {
				t.Errorf("read %d bytes, want at most %d", read, tt.wantRead)
			}
			if tt.wantErr {
				if err == nil {
					t.Errorf("got %+v %q, want an error", h, cmd)
				}
				return
			}
			if err != nil || h.requestID != tt.wantID || cmd != tt.wantCmd {
				t.Errorf("got %+v %q %v, want request %d, command %q", h, cmd, err, tt.wantID, tt.wantCmd)
			}
		})
	}
}

// errorReply is a decoded leproxy error reply.
type errorReply struct {
	requestID, responseTo int32
	opCode                wiremessage.OpCode
	OK                    float64 `bson:"ok"`
	Errmsg                string  `bson:"errmsg"`
	Code                  int32   `bson:"code"`
	CodeName              string  `bson:"codeName"`
}

// decodeReply decodes an OP_MSG or OP_REPLY holding one document with
// the driver's code.
func decodeReply(t testing.TB, msg []byte) errorReply {
	t.Helper()
	length, reqID, respTo, op, rem, ok := wiremessage.ReadHeader(msg)
	if !ok || int(length) != len(msg) {
		t.Fatalf("reply header: length %d of %d bytes, ok %t", length, len(msg), ok)
	}
	var doc bsoncore.Document
	switch op {
	case wiremessage.OpMsg:
		flags, rem, ok := wiremessage.ReadMsgFlags(rem)
		if !ok || flags != 0 {
			t.Fatalf("OP_MSG flags %v, ok %t", flags, ok)
		}
		st, rem, ok := wiremessage.ReadMsgSectionType(rem)
		if !ok || st != wiremessage.SingleDocument {
			t.Fatalf("OP_MSG section %v, ok %t", st, ok)
		}
		doc, rem, ok = wiremessage.ReadMsgSectionSingleDocument(rem)
		if !ok || len(rem) != 0 {
			t.Fatalf("OP_MSG document ok %t, %d bytes after it", ok, len(rem))
		}
	case wiremessage.OpReply:
		var n int32
		var cursor int64
		_, rem, _ = wiremessage.ReadReplyFlags(rem)
		cursor, rem, _ = wiremessage.ReadReplyCursorID(rem)
		_, rem, _ = wiremessage.ReadReplyStartingFrom(rem)
		n, rem, ok = wiremessage.ReadReplyNumberReturned(rem)
		if !ok || n != 1 || cursor != 0 {
			t.Fatalf("OP_REPLY returns %d documents, cursor %d", n, cursor)
		}
		doc, rem, ok = wiremessage.ReadReplyDocument(rem)
		if !ok || len(rem) != 0 {
			t.Fatalf("OP_REPLY document ok %t, %d bytes after it", ok, len(rem))
		}
	default:
		t.Fatalf("reply opcode %v", op)
	}
	if err := doc.Validate(); err != nil {
		t.Fatalf("reply document: %v", err)
	}
	var r errorReply
	if err := bson.Unmarshal(doc, &r); err != nil {
		t.Fatalf("reply document: %v", err)
	}
	r.requestID, r.responseTo, r.opCode = reqID, respTo, op
	return r
}

func TestAppendMongoError(t *testing.T) {
	tests := []struct {
		name     string
		req      msgHeader
		code     int32
		msg      string
		wantOp   wiremessage.OpCode
		wantName string
		wantMsg  string
	}{
		{"OP_MSG", msgHeader{requestID: 5, opCode: opMsg}, codeUnauthorized, "TLS is required", wiremessage.OpMsg, "Unauthorized", "TLS is required"},
		{"OP_QUERY gets OP_REPLY", msgHeader{requestID: -9, opCode: opQuery}, codeHostNotFound, "no route", wiremessage.OpReply, "HostNotFound", "no route"},
		{"unreachable", msgHeader{requestID: 1, opCode: opMsg}, codeHostUnreachable, "down", wiremessage.OpMsg, "HostUnreachable", "down"},
		{"NUL and bad UTF-8 cleaned", msgHeader{requestID: 1, opCode: opMsg}, codeHostNotFound, "a\x00b\xffc", wiremessage.OpMsg, "HostNotFound", "ab\uFFFDc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := []byte("kept")
			b := appendError(bytes.Clone(prefix), tt.req, 77, tt.code, tt.msg)
			if !bytes.HasPrefix(b, prefix) {
				t.Fatalf("dst's bytes were overwritten: %q", b[:4])
			}
			got := decodeReply(t, b[len(prefix):])
			if got.requestID != 77 || got.responseTo != tt.req.requestID || got.opCode != tt.wantOp {
				t.Errorf("header: got id %d, responseTo %d, %v; want 77, %d, %v", got.requestID, got.responseTo, got.opCode, tt.req.requestID, tt.wantOp)
			}
			if got.OK != 0 || got.Code != tt.code || got.CodeName != tt.wantName || got.Errmsg != tt.wantMsg {
				t.Errorf("document: got %+v, want ok 0, code %d %s, errmsg %q", got, tt.code, tt.wantName, tt.wantMsg)
			}
		})
	}
}

func FuzzMongoFirstMessage(f *testing.F) {
	f.Add(buildOpMsg(1, bsonDoc(f, bson.D{{Key: "hello", Value: 1}}), "", false))
	f.Add(buildOpMsg(2, bsonDoc(f, bson.D{{Key: "insert", Value: "c"}}), "documents", true))
	f.Add(buildOpQuery(3, "admin.$cmd", bsonDoc(f, bson.D{{Key: "isMaster", Value: 1}})))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{0x16, 3, 1, 0, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		h, cmd, err := readFirstMessage(r, nil)
		if read := len(data) - r.Len(); read > headerLen+maxFirstMessage {
			t.Fatalf("read %d bytes", read)
		}
		if err == nil {
			if h.length < headerLen || h.length > maxMessage || (h.opCode != opMsg && h.opCode != opQuery) {
				t.Fatalf("accepted header %+v", h)
			}
			if strings.IndexByte(cmd, 0) >= 0 {
				t.Fatalf("command name %q holds a NUL", cmd)
			}
			// Whatever it was, the answer is a well-formed reply.
			got := decodeReply(t, appendError(nil, h, 1, codeUnauthorized, cmd))
			if got.responseTo != h.requestID {
				t.Fatalf("reply to %d answers %d", h.requestID, got.responseTo)
			}
		}
		for _, op := range []int32{opMsg, opQuery} {
			if name, err := commandName(op, data); err == nil && strings.IndexByte(name, 0) >= 0 {
				t.Fatalf("command name %q holds a NUL", name)
			}
		}
		io.Copy(io.Discard, r)
	})
}
