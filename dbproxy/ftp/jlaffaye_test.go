package ftp_test

import (
	"bytes"
	"crypto/tls"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/jlaffaye/ftp"
	"github.com/leproxy/leproxy/dbproxy"
)

// TestJlaffaye drives github.com/jlaffaye/ftp through leproxy to vsftpd,
// with explicit (AUTH TLS) and implicit TLS, in extended passive and
// passive mode: a 20 MB upload and download intact and a listing.
func TestJlaffaye(t *testing.T) {
	for _, tc := range []struct {
		name       string
		proto      string
		pasv       bool
		backendTLS bool
	}{
		{"explicit/EPSV", "ftp", false, false},
		{"explicit/PASV", "ftp", true, false},
		{"implicit/EPSV", "ftps", false, false},
		{"implicit/PASV", "ftps", true, false},
		{"explicit/EPSV/TLSBackend", "ftp", false, true},
		{"implicit/PASV/TLSBackend", "ftps", true, true},
		{"explicit/EPSV/TLS12", "ftp", false, false},
		{"implicit/PASV/TLS12/TLSBackend", "ftps", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := start(t, fixtureOptions{proto: tc.proto, backendTLS: tc.backendTLS})
			cfg := f.clientTLS()
			if strings.Contains(tc.name, "TLS12") {
				cfg.MaxVersion = tls.VersionTLS12 // resumes by session ticket
			}
			tlsOpt := ftp.DialWithExplicitTLS(cfg)
			if tc.proto == "ftps" {
				tlsOpt = ftp.DialWithTLS(cfg)
			}
			c, err := ftp.Dial(f.p.Addr, tlsOpt, ftp.DialWithTimeout(deadline), ftp.DialWithDisabledEPSV(tc.pasv))
			if err != nil {
				t.Fatalf("Dial: %v", err)
			}
			defer c.Quit()
			if err := c.Login("anonymous", "anonymous"); err != nil {
				t.Fatalf("Login: %v", err)
			}
			up := randomData(bigSize, 1)
			if err := c.Stor("pub/up.bin", bytes.NewReader(up)); err != nil {
				t.Fatalf("Stor: %v", err)
			}
			wantFile(t, f.v.Pub+"/up.bin", up)

			down := randomData(bigSize, 2)
			f.putFile(t, "down.bin", down)
			r, err := c.Retr("pub/down.bin")
			if err != nil {
				t.Fatalf("Retr: %v", err)
			}
			got, err := io.ReadAll(r)
			if err != nil {
				t.Fatalf("reading the download: %v", err)
			}
			if err := r.Close(); err != nil {
				t.Fatalf("closing the download (the final reply): %v", err)
			}
			wantSame(t, "download", got, down)

			entries, err := c.List("pub")
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			var names []string
			for _, e := range entries {
				names = append(names, e.Name)
				if e.Name == "down.bin" && e.Size != bigSize {
					t.Errorf("List: down.bin has size %d, want %d", e.Size, bigSize)
				}
			}
			slices.Sort(names)
			if !slices.Equal(names, []string{"down.bin", "up.bin"}) {
				t.Errorf("List: got %q, want [down.bin up.bin]", names)
			}
			if err := c.NoOp(); err != nil {
				t.Errorf("NOOP after the transfers: %v", err)
			}
		})
	}
}

// TestJlaffayePlaintext: with "plaintext: allow" on the default route a
// client without TLS is served in plaintext, control and data.
func TestJlaffayePlaintext(t *testing.T) {
	f := start(t, fixtureOptions{mod: func(c *dbproxy.Config) { c.Routes[0].AllowPlaintext = true }})
	c, err := ftp.Dial(f.p.Addr, ftp.DialWithTimeout(deadline))
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer c.Quit()
	if err := c.Login("anonymous", "anonymous"); err != nil {
		t.Fatalf("Login: %v", err)
	}
	up := randomData(1<<20, 10)
	if err := c.Stor("pub/up.bin", bytes.NewReader(up)); err != nil {
		t.Fatalf("Stor: %v", err)
	}
	wantFile(t, f.v.Pub+"/up.bin", up)
	r, err := c.Retr("pub/up.bin")
	if err != nil {
		t.Fatalf("Retr: %v", err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	wantSame(t, "download", got, up)
}
