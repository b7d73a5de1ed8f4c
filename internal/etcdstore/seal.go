package etcdstore

import (
	"bytes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/crypto/chacha20poly1305"
)

// KeyEnv and KeyFileEnv are the environment variables that hold the
// encryption key of values at rest (LEPROXY_STORE_KEY), or the file it is
// in (LEPROXY_STORE_KEY_FILE).
const (
	KeyEnv     = "LEPROXY_STORE_KEY"
	KeyFileEnv = "LEPROXY_STORE_KEY_FILE"
)

// sealMagic starts a sealed value: "lpx1" | key ID (8 bytes) | nonce (24
// bytes) | XChaCha20-Poly1305 ciphertext and tag. The key ID is the first
// 8 bytes of SHA-256 of the key, so a value sealed under another key is
// named as such rather than failing as "corrupted".
const sealMagic = "lpx1"

const keyIDLen = 8

// ErrSealed is returned for a sealed value that cannot be opened: no key,
// another key, or an altered value.
var ErrSealed = errors.New("etcdstore: cannot open sealed value")

// sealer encrypts values that hold a private key with XChaCha20-Poly1305,
// the value's storage key name as associated data, so that a sealed value
// copied under another name does not open.
type sealer struct {
	aead cipher.AEAD
	id   [keyIDLen]byte
}

// ParseKey decodes a 32-byte key given in base64 (standard or URL
// alphabet, padded or not), as `openssl rand -base64 32` writes it.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if k, err := enc.DecodeString(s); err == nil {
			if len(k) != chacha20poly1305.KeySize {
				return nil, fmt.Errorf("etcdstore: store key is %d bytes, want %d (base64 of 32 random bytes: openssl rand -base64 32)", len(k), chacha20poly1305.KeySize)
			}
			return k, nil
		}
	}
	return nil, errors.New("etcdstore: store key is not base64 (want 32 random bytes: openssl rand -base64 32)")
}

// KeyFromEnv returns the key in $LEPROXY_STORE_KEY, or in the file named by
// $LEPROXY_STORE_KEY_FILE; nil if neither is set.
func KeyFromEnv() ([]byte, error) {
	s, file := os.Getenv(KeyEnv), os.Getenv(KeyFileEnv)
	switch {
	case s != "" && file != "":
		return nil, fmt.Errorf("etcdstore: both %s and %s are set", KeyEnv, KeyFileEnv)
	case file != "":
		b, err := os.ReadFile(file) // #nosec G304 G703 -- the operator names the key file
		if err != nil {
			return nil, fmt.Errorf("etcdstore: %s: %w", KeyFileEnv, err)
		}
		k, err := ParseKey(string(b))
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", KeyFileEnv, file, err)
		}
		return k, nil
	case s != "":
		k, err := ParseKey(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", KeyEnv, err)
		}
		return k, nil
	}
	return nil, nil
}

func newSealer(key []byte) (*sealer, error) {
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, fmt.Errorf("etcdstore: store key: %w", err)
	}
	s := &sealer{aead: aead}
	sum := sha256.Sum256(key)
	copy(s.id[:], sum[:keyIDLen])
	return s, nil
}

// holdsPrivateKey reports whether data holds a PEM private key: the values
// that are sealed (certificates with their key, the ACME account key, the
// local CA's key, tls-alpn-01 answers).
func holdsPrivateKey(data []byte) bool {
	return bytes.Contains(data, []byte("PRIVATE KEY-----"))
}

// seal returns data sealed for name if it holds a private key and s is
// not nil, else data.
func (s *sealer) seal(name string, data []byte) ([]byte, error) {
	if s == nil || !holdsPrivateKey(data) {
		return data, nil
	}
	out := make([]byte, 0, len(sealMagic)+keyIDLen+s.aead.NonceSize()+len(data)+s.aead.Overhead())
	out = append(out, sealMagic...)
	out = append(out, s.id[:]...)
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("etcdstore: sealing %s: %w", name, err)
	}
	out = append(out, nonce...)
	return s.aead.Seal(out, nonce, data, []byte(name)), nil
}

// open returns the plaintext of a value read under name: a sealed value
// opened, anything else as it is (values written before a key was set).
func (s *sealer) open(name string, data []byte) ([]byte, error) {
	if !bytes.HasPrefix(data, []byte(sealMagic)) {
		return data, nil
	}
	if s == nil {
		return nil, fmt.Errorf("%w %s: it is encrypted and %s is not set", ErrSealed, name, KeyEnv)
	}
	rest := data[len(sealMagic):]
	if len(rest) < keyIDLen+s.aead.NonceSize()+s.aead.Overhead() {
		return nil, fmt.Errorf("%w %s: truncated", ErrSealed, name)
	}
	if !bytes.Equal(rest[:keyIDLen], s.id[:]) {
		return nil, fmt.Errorf("%w %s: sealed under another key (id %x, ours %x)", ErrSealed, name, rest[:keyIDLen], s.id)
	}
	rest = rest[keyIDLen:]
	nonce, ct := rest[:s.aead.NonceSize()], rest[s.aead.NonceSize():]
	pt, err := s.aead.Open(nil, nonce, ct, []byte(name))
	if err != nil {
		return nil, fmt.Errorf("%w %s: altered, or sealed under another name", ErrSealed, name)
	}
	return pt, nil
}
