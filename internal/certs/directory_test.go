package certs

import (
	"bytes"
	"strings"
	"testing"
)

func TestResolveDirectory(t *testing.T) {
	tests := []struct {
		in        string
		wantURL   string
		wantLocal bool
		wantErr   bool
	}{
		{in: "letsencrypt", wantURL: "https://acme-v02.api.letsencrypt.org/directory"},
		{in: "LetsEncrypt", wantURL: "https://acme-v02.api.letsencrypt.org/directory"},
		{in: "letsencrypt-staging", wantURL: "https://acme-staging-v02.api.letsencrypt.org/directory"},
		{in: "zerossl", wantURL: "https://acme.zerossl.com/v2/DV90"},
		{in: "local", wantLocal: true},
		{in: "https://acme.example.com/directory", wantURL: "https://acme.example.com/directory"},
		{in: "https://127.0.0.1:14000/dir", wantURL: "https://127.0.0.1:14000/dir"},
		{in: "", wantErr: true},
		{in: "letsencrypt-prod", wantErr: true},
		{in: "http://acme.example.com/directory", wantErr: true},
		{in: "https://", wantErr: true},
		{in: "acme.example.com/directory", wantErr: true},
		{in: "https://user:pw@acme.example.com/", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			gotURL, gotLocal, err := ResolveDirectory(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ResolveDirectory(%q) = %q, %v, nil; want an error", tt.in, gotURL, gotLocal)
				}
				if want := `"` + tt.in + `"`; !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name the value %s", err, want)
				}
				return
			}
			if err != nil {
				t.Fatalf("ResolveDirectory(%q): %v", tt.in, err)
			}
			if gotURL != tt.wantURL || gotLocal != tt.wantLocal {
				t.Errorf("ResolveDirectory(%q) = %q, %v; want %q, %v", tt.in, gotURL, gotLocal, tt.wantURL, tt.wantLocal)
			}
		})
	}
}

func TestExternalAccountBinding(t *testing.T) {
	// Key bytes chosen so that base64url and standard base64 differ
	// (0xfb 0xff → "-_8" vs "+/8").
	key := []byte{0xfb, 0xff, 0x01, 0x02, 0xfe}
	tests := []struct {
		name      string
		kid, hmac string
		wantNil   bool
		wantErr   string
	}{
		{name: "none", wantNil: true},
		{name: "raw url", kid: "kid1", hmac: "-_8BAv4"},
		{name: "padded url", kid: "kid1", hmac: "-_8BAv4="},
		{name: "raw std", kid: "kid1", hmac: "+/8BAv4"},
		{name: "padded std", kid: "kid1", hmac: "+/8BAv4="},
		{name: "spaces", kid: " kid1 ", hmac: " -_8BAv4 \n"},
		{name: "kid only", kid: "kid1", wantErr: "-eab-hmac"},
		{name: "hmac only", hmac: "-_8BAv4", wantErr: "-eab-kid"},
		{name: "not base64", kid: "kid1", hmac: "not*base64", wantErr: "decoding HMAC key"},
		{name: "only padding", kid: "kid1", hmac: "==", wantErr: "empty key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eab, err := externalAccountBinding(tt.kid, tt.hmac)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("externalAccountBinding: %v", err)
			}
			if tt.wantNil {
				if eab != nil {
					t.Fatalf("got %+v, want nil", eab)
				}
				return
			}
			if eab.KID != "kid1" || !bytes.Equal(eab.Key, key) {
				t.Errorf("got KID %q key %x, want %q %x", eab.KID, eab.Key, "kid1", key)
			}
		})
	}
}

func TestNewRejectsHalfEAB(t *testing.T) {
	_, err := New(Config{CacheDir: t.TempDir(), EABKeyID: "kid1"})
	if err == nil || !strings.Contains(err.Error(), "external account binding") {
		t.Fatalf("New with only EABKeyID: got %v, want an external account binding error", err)
	}
}
