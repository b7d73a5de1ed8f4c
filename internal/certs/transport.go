package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"
)

// Bounds on the ACME client's requests; test seams.
var (
	acmeRequestTimeout = 2 * time.Minute  // a whole request, body included
	acmeHeaderTimeout  = 30 * time.Second // waiting for response headers
)

// ErrClosed is returned for ACME requests after Manager.Close.
var ErrClosed = errors.New("certs: certificate manager closed")

// newACMEHTTPClient returns the ACME client's HTTP client: it trusts roots
// (nil: the system roots), bounds every request, and fails every request,
// in flight or new, once done is closed.
func newACMEHTTPClient(roots *x509.CertPool, done context.Context) *http.Client {
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	base.ResponseHeaderTimeout = acmeHeaderTimeout
	return &http.Client{
		Transport: &closableTransport{base: base, done: done},
		Timeout:   acmeRequestTimeout,
	}
}

// closableTransport cancels its requests when done is done.
type closableTransport struct {
	base http.RoundTripper
	done context.Context
}

// RoundTrip implements http.RoundTripper.
func (t *closableTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.done.Err() != nil {
		return nil, ErrClosed
	}
	ctx, cancel := context.WithCancel(req.Context())
	stop := context.AfterFunc(t.done, cancel)
	release := func() {
		stop()
		cancel()
	}
	resp, err := t.base.RoundTrip(req.WithContext(ctx))
	if err != nil {
		release()
		if t.done.Err() != nil {
			return nil, ErrClosed
		}
		return nil, err
	}
	if t.done.Err() != nil {
		// Closed while the response came: the cancellation and the
		// response raced, and a closed manager acts on no answer.
		resp.Body.Close()
		release()
		return nil, ErrClosed
	}
	resp.Body = &releasingBody{ReadCloser: resp.Body, release: release}
	return resp, nil
}

// releasingBody calls release once, when the body is closed.
type releasingBody struct {
	io.ReadCloser
	once    sync.Once
	release func()
}

func (b *releasingBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.release)
	return err
}
