package certs

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"golang.org/x/crypto/acme"
)

// Well-known ACME directories.
const (
	// LetsEncryptURL is Let's Encrypt's production directory.
	LetsEncryptURL = "https://acme-v02.api.letsencrypt.org/directory"
	// LetsEncryptStagingURL is Let's Encrypt's staging directory.
	LetsEncryptStagingURL = "https://acme-staging-v02.api.letsencrypt.org/directory"
	// ZeroSSLURL is ZeroSSL's directory; it needs External Account Binding.
	ZeroSSLURL = "https://acme.zerossl.com/v2/DV90"
)

// ResolveDirectory turns the value of the -acme flag into an ACME directory
// URL: "letsencrypt", "letsencrypt-staging" and "zerossl" name well-known
// directories, "local" selects the local CA (local is true, url empty), and
// an https:// URL is used as it is. Anything else is an error naming the
// value.
func ResolveDirectory(name string) (dirURL string, local bool, err error) {
	switch strings.ToLower(strings.TrimSpace(name)) {
	case "letsencrypt":
		return LetsEncryptURL, false, nil
	case "letsencrypt-staging":
		return LetsEncryptStagingURL, false, nil
	case "zerossl":
		return ZeroSSLURL, false, nil
	case "local":
		return "", true, nil
	}
	u, err := url.Parse(name)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil {
		return "", false, fmt.Errorf("certs: unknown ACME directory %q: want letsencrypt, letsencrypt-staging, zerossl, local or an https:// URL", name)
	}
	return name, false, nil
}

// externalAccountBinding validates the EAB key ID and HMAC key pair: both or
// neither must be set, and the HMAC key is base64url (padded or not; the
// standard alphabet is accepted too).
func externalAccountBinding(kid, hmac string) (*acme.ExternalAccountBinding, error) {
	kid, hmac = strings.TrimSpace(kid), strings.TrimSpace(hmac)
	switch {
	case kid == "" && hmac == "":
		return nil, nil
	case hmac == "":
		return nil, errors.New("certs: external account binding: key ID (-eab-kid) given without HMAC key (-eab-hmac)")
	case kid == "":
		return nil, errors.New("certs: external account binding: HMAC key (-eab-hmac) given without key ID (-eab-kid)")
	}
	key, err := decodeBase64Key(hmac)
	if err != nil {
		return nil, fmt.Errorf("certs: external account binding: decoding HMAC key (-eab-hmac): %w", err)
	}
	return &acme.ExternalAccountBinding{KID: kid, Key: key}, nil
}

// decodeBase64Key decodes base64url or standard base64, with or without
// padding.
func decodeBase64Key(s string) ([]byte, error) {
	raw := strings.TrimRight(s, "=")
	key, err := base64.RawURLEncoding.DecodeString(raw)
	if err != nil {
		var stdErr error
		if key, stdErr = base64.RawStdEncoding.DecodeString(raw); stdErr != nil {
			return nil, fmt.Errorf("not base64url: %w", err)
		}
	}
	if len(key) == 0 {
		return nil, errors.New("empty key")
	}
	return key, nil
}
