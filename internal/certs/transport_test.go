package certs

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

func TestACMEHTTPClient(t *testing.T) {
	var hits atomic.Int32
	release := make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path == "/block" {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		io.WriteString(w, "ok")
	}))
	// The untrusted request makes the server log a handshake error.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())

	t.Run("system roots do not trust a private server", func(t *testing.T) {
		done, cancel := context.WithCancel(context.Background())
		defer cancel()
		resp, err := newACMEHTTPClient(nil, done).Get(srv.URL)
		if err == nil {
			resp.Body.Close()
			t.Fatal("request trusted the test server without RootCAs")
		}
		var uerr x509.UnknownAuthorityError
		if !errors.As(err, &uerr) {
			t.Errorf("got %v, want an unknown authority error", err)
		}
	})

	done, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := newACMEHTTPClient(roots, done)
	resp, err := client.Get(srv.URL)
	if err != nil {
		t.Fatalf("request with RootCAs: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(body) != "ok" {
		t.Fatalf("body %q, %v; want ok", body, err)
	}

	// Closing fails a request in flight.
	errc := make(chan error, 1)
	go func() {
		resp, err := client.Get(srv.URL + "/block")
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	for hits.Load() < 2 {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("request in flight at close: got %v, want ErrClosed", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("request in flight not ended by close")
	}

	// And refuses new ones without a connection.
	before := hits.Load()
	if _, err := client.Get(srv.URL); !errors.Is(err, ErrClosed) {
		t.Errorf("request after close: got %v, want ErrClosed", err)
	}
	if got := hits.Load(); got != before {
		t.Errorf("request after close reached the server")
	}
}
