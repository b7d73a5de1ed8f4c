package kafka

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/leproxy/leproxy/dbproxy/dbtest"
)

// echoKey is an api key Kafka does not define: leproxy passes its
// requests and responses through as framed bytes.
const echoKey = 1000

func TestConformance(t *testing.T) {
	dbtest.Conformance{
		Protocol: "kafka",
		// A broker that answers ApiVersions and, to an echoKey request
		// carrying msg, a response carrying "name:msg".
		StartBackend: func(t testing.TB, name string) string {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			dbtest.ServeFake(t, l, 30*time.Second, nil, func(c net.Conn) { serveEcho(c, name) })
			return l.Addr().String()
		},
		// A Kafka client's first request is ApiVersions; a refusal answers
		// it with an error code.
		Connect: func(t testing.TB, conn net.Conn, cfg *tls.Config) (net.Conn, error) {
			c := conn
			if cfg != nil {
				tc := tls.Client(conn, cfg)
				if err := tc.Handshake(); err != nil {
					conn.Close()
					return nil, err
				}
				c = tc
			}
			req := kmsg.NewPtrApiVersionsRequest()
			req.SetVersion(3)
			req.ClientSoftwareName, req.ClientSoftwareVersion = "conformance", "1"
			resp := kmsg.NewPtrApiVersionsResponse()
			resp.SetVersion(3)
			if err := roundTrip(c, 1, req, resp); err != nil {
				conn.Close()
				return nil, err
			}
			if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
				conn.Close()
				return nil, err
			}
			return c, nil
		},
		Request:    echoRequest,
		ReadAnswer: readEcho,
		Silent:     true, // Kafka's ApiVersions response carries an error code, not text:
		// a refused client reads BROKER_NOT_AVAILABLE, and the reason is in
		// leproxy's log (TestRefusals checks the code).
	}.Run(t)
}

// appendRequest frames req (header v1 or v2 as its version asks) with
// correlation id corr.
func appendRequest(dst []byte, corr int32, req kmsg.Request) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint16(dst, uint16(req.Key()))
	dst = binary.BigEndian.AppendUint16(dst, uint16(req.GetVersion()))
	dst = binary.BigEndian.AppendUint32(dst, uint32(corr))
	dst = binary.BigEndian.AppendUint16(dst, 4)
	dst = append(dst, "test"...)
	if req.IsFlexible() {
		dst = append(dst, 0)
	}
	dst = req.AppendTo(dst)
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
	return dst
}

// readFrame reads one frame's content.
func readFrame(r io.Reader) ([]byte, error) {
	var size [4]byte
	if _, err := io.ReadFull(r, size[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(size[:])
	if n > 64<<20 {
		return nil, fmt.Errorf("frame of %d bytes", n)
	}
	b := make([]byte, n)
	_, err := io.ReadFull(r, b)
	return b, err
}

// roundTrip sends req and reads its response into resp.
func roundTrip(c net.Conn, corr int32, req kmsg.Request, resp kmsg.Response) error {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(appendRequest(nil, corr, req)); err != nil {
		return err
	}
	content, err := readFrame(c)
	if err != nil {
		return err
	}
	if got := int32(binary.BigEndian.Uint32(content)); got != corr {
		return fmt.Errorf("correlation id %d, want %d", got, corr)
	}
	hl, err := responseHeaderLen(content, req.Key(), req.GetVersion())
	if err != nil {
		return err
	}
	return resp.ReadFrom(content[hl:])
}

// echoRequest is an echoKey request carrying msg.
func echoRequest(msg string) []byte {
	b := []byte{0, 0, 0, 0, echoKey >> 8, echoKey & 0xff, 0, 0, 0, 0, 0, 7, 0, 4}
	b = append(append(b, "test"...), msg...)
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return b
}

// readEcho reads the answer to an echoRequest.
func readEcho(r io.Reader) (string, error) {
	content, err := readFrame(r)
	if err != nil {
		return "", err
	}
	if len(content) < 4 || binary.BigEndian.Uint32(content) != 7 {
		return "", errors.New("bad echo response")
	}
	return string(content[4:]), nil
}

// serveEcho is the conformance broker's side of a connection.
func serveEcho(c net.Conn, name string) {
	for {
		content, err := readFrame(c)
		if err != nil {
			return
		}
		h, err := parseRequestHeader(content)
		if err != nil {
			return
		}
		out := binary.BigEndian.AppendUint32([]byte{0, 0, 0, 0}, uint32(h.corr))
		switch h.key {
		case keyApiVersions:
			resp := kmsg.NewPtrApiVersionsResponse()
			resp.SetVersion(h.version)
			resp.ApiKeys = []kmsg.ApiVersionsResponseApiKey{{ApiKey: keyApiVersions, MaxVersion: 3}}
			out = resp.AppendTo(out)
		case echoKey:
			out = append(out, name+":"+strings.TrimPrefix(string(content[8:]), "\x00\x04test")...)
		default:
			return
		}
		binary.BigEndian.PutUint32(out, uint32(len(out)-4))
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}
