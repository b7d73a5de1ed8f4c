package httpproxy

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// scanAll feeds raw to a new scanner in pieces of at most step bytes (all
// at once when step is 0) and returns its verdicts as strings.
func scanAll(raw []byte, step int) []string {
	s := newFramingScanner(1 << 20)
	for len(raw) > 0 {
		n := len(raw)
		if step > 0 && step < n {
			n = step
		}
		s.feed(raw[:n])
		raw = raw[n:]
	}
	var out []string
	for _, v := range s.verdicts {
		out = append(out, fmt.Sprintf("%s %s %s", v.method, v.target, v.problem))
	}
	return out
}

func TestFramingScanner(t *testing.T) {
	const host = "Host: a\r\n"
	for _, tc := range []struct {
		name string
		raw  string
		want []string
	}{
		{"one request", "GET / HTTP/1.1\r\n" + host + "\r\n", []string{"GET / "}},
		{"bare LF line ends", "GET /a HTTP/1.1\n" + host[:7] + "\n\nGET /b HTTP/1.1\n\n", []string{"GET /a ", "GET /b "}},
		{"content-length bodies", "POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcPOST /b HTTP/1.1\r\ncontent-length:0\r\n\r\nGET /c HTTP/1.1\r\n\r\n",
			[]string{"POST /a ", "POST /b ", "GET /c "}},
		{"body that looks like a head", "POST /a HTTP/1.1\r\nContent-Length: 19\r\n\r\nGET /x HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
			[]string{"POST /a ", "GET /b "}},
		{"chunked", "POST /a HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\nA;x=\"y\"\r\n0123456789\r\n0\r\nT: 1\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
			[]string{"POST /a ", "GET /b "}},
		{"content-length and chunked", "POST /a HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
			[]string{"POST /a " + problemCLAndTE}},
		{"duplicate content-length", "POST /a HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
			[]string{"POST /a " + problemDuplicateCL}},
		{"obs-fold", "GET /a HTTP/1.1\r\nX: 1\r\n\t2\r\n\r\n", []string{"GET /a " + problemObsFold}},
		{"TE in HTTP/1.0", "POST /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", []string{"POST /a " + problemTEInHTTP10}},
		// Where net/http refuses the framing itself (and closes), the
		// scanner stops: no verdict after it.
		{"gzip transfer-encoding", "POST /a HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nGET /b HTTP/1.1\r\n\r\n", []string{"POST /a "}},
		{"bad content-length", "POST /a HTTP/1.1\r\nContent-Length: +3\r\n\r\nabcGET /b HTTP/1.1\r\n\r\n", []string{"POST /a "}},
		{"bare LF in a chunk line", "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\nGET /b HTTP/1.1\r\n\r\n", []string{"POST /a "}},
		{"chunk data without CRLF", "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\nGET /b HTTP/1.1\r\n\r\n", []string{"POST /a "}},
		{"upgrade", "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nGET /b HTTP/1.1\r\n\r\n", []string{"GET /ws "}},
		{"HTTP/2 preface-like version", "GET /a HTTP/1.2\r\n\r\nGET /b HTTP/1.1\r\n\r\n", nil},
		{"empty request line", "\r\nGET /a HTTP/1.1\r\n\r\n", nil},
		{"header without colon", "GET /a HTTP/1.1\r\nX\r\n\r\nGET /b HTTP/1.1\r\n\r\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, step := range []int{0, 1, 2, 7} {
				got := scanAll([]byte(tc.raw), step)
				if strings.Join(got, "|") != strings.Join(tc.want, "|") {
					t.Errorf("in pieces of %d: verdicts %q, want %q", step, got, tc.want)
				}
			}
		})
	}
}

func TestFramingScannerLimits(t *testing.T) {
	s := newFramingScanner(100) // heads up to 4196 bytes
	s.feed([]byte("GET /a HTTP/1.1\r\nX: " + strings.Repeat("x", 5000) + "\r\n\r\n"))
	if len(s.verdicts) != 0 || s.state != stateStopped {
		t.Errorf("an over-long head: verdicts %v, state %d; want none, stopped", s.verdicts, s.state)
	}
	s = newFramingScanner(100)
	s.feed([]byte("POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;" + strings.Repeat("x", maxChunkLine)))
	if s.state != stateStopped {
		t.Errorf("an over-long chunk line: state %d, want stopped", s.state)
	}
	s = newFramingScanner(100)
	for i := 0; i < maxVerdicts+10; i++ {
		s.feed([]byte("GET / HTTP/1.1\r\n\r\n"))
	}
	if len(s.verdicts) != maxVerdicts || s.state != stateStopped {
		t.Errorf("pipelined past the queue: %d verdicts, state %d; want %d, stopped", len(s.verdicts), s.state, maxVerdicts)
	}
}

func TestFramingVerdict(t *testing.T) {
	s := newFramingScanner(1 << 20)
	s.feed([]byte("GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\n"))
	if p, ok := s.verdict("GET", "/a"); !ok || p != "" {
		t.Errorf("first request: %q %v, want vouched for", p, ok)
	}
	// Out of step: this one and every later one are not vouched for.
	if _, ok := s.verdict("GET", "/x"); ok {
		t.Error("a request that is not the next head was vouched for")
	}
	if _, ok := s.verdict("GET", "/c"); ok {
		t.Error("after a mismatch, a later request was vouched for")
	}
	if _, ok := newFramingScanner(1<<20).verdict("GET", "/"); ok {
		t.Error("a request without a head was vouched for")
	}
}

// FuzzFramingScanner checks the scanner against net/http's own reading of
// the same bytes: in whatever pieces they arrive, the scanner never
// vouches for a request other than the one net/http reads in that place,
// and refuses nothing after a refusal.
func FuzzFramingScanner(f *testing.F) {
	f.Add([]byte("POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nHost: a\r\n\r\n"), uint8(3))
	f.Add([]byte("POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;e\r\nabc\r\n0\r\nT: x\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n"), uint8(1))
	f.Add([]byte("POST /a HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), uint8(0))
	f.Add([]byte("GET /a HTTP/1.0\r\nX: 1\r\n 2\r\n\r\nGET /b HTTP/1.1\n\n"), uint8(5))
	f.Fuzz(func(t *testing.T, raw []byte, step uint8) {
		s := newFramingScanner(4096)
		for rest := raw; len(rest) > 0; {
			n := len(rest)
			if step > 0 && int(step) < n {
				n = int(step)
			}
			s.feed(rest[:n])
			rest = rest[n:]
		}
		for i, v := range s.verdicts {
			if v.problem != "" && i != len(s.verdicts)-1 {
				t.Fatalf("verdict %d refuses (%s) but more follow: %v", i, v.problem, s.verdicts)
			}
		}
		br := bufio.NewReaderSize(strings.NewReader(string(raw)), 4096)
		for i := 0; i < len(s.verdicts); i++ {
			req, err := http.ReadRequest(br)
			if err != nil {
				return // net/http gives up here and closes the connection
			}
			v := s.verdicts[i]
			if v.method != req.Method || v.target != req.RequestURI {
				t.Fatalf("verdict %d is for %s %s, net/http read %s %s", i, v.method, v.target, req.Method, req.RequestURI)
			}
			if v.problem != "" {
				return // the connection ends with this request
			}
			if _, err := io.Copy(io.Discard, req.Body); err != nil {
				return
			}
		}
	})
}
