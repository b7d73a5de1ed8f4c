package elasticsearch

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/leproxy/leproxy/dbproxy/dbtest"
)

func TestConformance(t *testing.T) {
	dbtest.Conformance{
		Protocol: "elasticsearch",
		// A node that answers GET /<msg> with "name:msg".
		StartBackend: func(t testing.TB, name string) string {
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprintf(w, "%s:%s", name, strings.TrimPrefix(r.URL.Path, "/"))
			}))
			srv.Config.ErrorLog = log.New(io.Discard, "", 0)
			srv.Start()
			t.Cleanup(srv.Close)
			return srv.Listener.Addr().String()
		},
		// An HTTP client learns that its session is up from a first answer;
		// a refusal is an answer too (421, or 400 for plaintext).
		Connect: func(t testing.TB, conn net.Conn, cfg *tls.Config) (net.Conn, error) {
			c := conn
			if cfg != nil {
				cfg = cfg.Clone()
				cfg.NextProtos = []string{alpn}
				tc := tls.Client(conn, cfg)
				if err := tc.Handshake(); err != nil {
					return nil, err
				}
				c = tc
			}
			if _, err := c.Write(conformanceRequest("connect")); err != nil {
				return nil, err
			}
			got, err := readConformanceAnswer(c)
			if err != nil {
				return nil, err
			}
			if !strings.HasSuffix(got, ":connect") {
				return nil, fmt.Errorf("first answer: got %q", got)
			}
			return c, nil
		},
		Request:    conformanceRequest,
		ReadAnswer: readConformanceAnswer,
		NoHalfClose: "Go's HTTP server takes a client's EOF during a request for the client gone " +
			"and cancels the request (see TestElasticsearchHalfClose)",
	}.Run(t)
}

// conformanceRequest asks the conformance node to answer msg.
func conformanceRequest(msg string) []byte {
	return []byte("GET /" + msg + " HTTP/1.1\r\nHost: es.test\r\n\r\n")
}

// readConformanceAnswer reads one response and returns its body; a status
// other than 200 is an error carrying the body, leproxy's reason.
func readConformanceAnswer(r io.Reader) (string, error) {
	res, err := http.ReadResponse(bufio.NewReader(r), nil)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return "", err
	}
	if res.StatusCode != http.StatusOK {
		return "", errors.New(res.Status + ": " + string(body))
	}
	return string(body), nil
}
