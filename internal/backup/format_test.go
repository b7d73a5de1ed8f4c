package backup

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"
)

func TestHeaderLayout(t *testing.T) {
	archive := archiveOf(t, otherCache)
	if got := string(archive[:len(magic)]); got != "LEPROXY-BACKUP" {
		t.Errorf("magic %q, want LEPROXY-BACKUP", got)
	}
	if got := archive[len(magic)]; got != 1 {
		t.Errorf("version %d, want 1", got)
	}
	p := archive[len(magic)+1 : len(magic)+4]
	if got := (kdfParams{p[0], p[1], p[2]}); got != writeParams {
		t.Errorf("scrypt parameters %v, want %v", got, writeParams)
	}
	if got, want := binary.BigEndian.Uint64(archive[headerSize-8:headerSize]), uint64(len(archive)-headerSize); got != want {
		t.Errorf("ciphertext length %d, want %d", got, want)
	}
	// Two archives of the same cache differ in salt, nonce and ciphertext.
	other := archiveOf(t, otherCache)
	saltAt := len(magic) + 4
	if bytes.Equal(archive[saltAt:saltAt+saltSize], other[saltAt:saltAt+saltSize]) {
		t.Error("two archives have the same salt")
	}
	if bytes.Equal(archive[headerSize:], other[headerSize:]) {
		t.Error("two archives have the same ciphertext")
	}
}

// TestHeaderAuthenticated checks that the header is the additional data:
// the ciphertext opens with it and not without it.
func TestHeaderAuthenticated(t *testing.T) {
	archive := archiveOf(t, otherCache)
	h, hdr, err := readHeader(bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	key, err := deriveKey(testPassphrase, h.params, h.salt[:])
	if err != nil {
		t.Fatal(err)
	}
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		t.Fatal(err)
	}
	ct := archive[headerSize:]
	if _, err := aead.Open(nil, h.nonce[:], ct, hdr); err != nil {
		t.Errorf("open with the header as additional data: %v", err)
	}
	if _, err := aead.Open(nil, h.nonce[:], ct, nil); err == nil {
		t.Error("open without additional data succeeded; the header is not authenticated")
	}
}

func TestKDFParamsBounds(t *testing.T) {
	tests := []struct {
		p    kdfParams
		want error
	}{
		{productionParams, nil},
		{kdfParams{logN: 15, r: 8, p: 1}, nil},
		{kdfParams{logN: 18, r: 8, p: 1}, nil},
		{kdfParams{logN: 17, r: 8, p: 4}, nil},
		{kdfParams{logN: 1, r: 1, p: 1}, nil},
		{kdfParams{logN: 0, r: 8, p: 1}, ErrUnsupportedParams},
		{kdfParams{logN: 17, r: 0, p: 1}, ErrUnsupportedParams},
		{kdfParams{logN: 17, r: 8, p: 0}, ErrUnsupportedParams},
		{kdfParams{logN: 19, r: 8, p: 1}, ErrUnsupportedParams},
		{kdfParams{logN: 17, r: 8, p: 5}, ErrUnsupportedParams},
		{kdfParams{logN: 40, r: 8, p: 1}, ErrUnsupportedParams},
		{kdfParams{logN: 255, r: 255, p: 255}, ErrUnsupportedParams},
		{kdfParams{logN: 64, r: 1, p: 1}, ErrUnsupportedParams},
	}
	for _, tt := range tests {
		if err := tt.p.check(); !errors.Is(err, tt.want) {
			t.Errorf("%v: got %v, want %v", tt.p, err, tt.want)
		}
	}
}

func TestSealOpen(t *testing.T) {
	for _, size := range []int{0, 1, 1000, 1 << 20} {
		plaintext := bytes.Repeat([]byte{0xa5}, size)
		archive, err := seal(bytes.Clone(plaintext), testPassphrase)
		if err != nil {
			t.Fatalf("seal %d bytes: %v", size, err)
		}
		if got, want := len(archive), headerSize+size+overhead; got != want {
			t.Errorf("archive of %d bytes is %d bytes, want %d", size, got, want)
		}
		got, err := open(bytes.NewReader(archive), testPassphrase)
		if err != nil {
			t.Fatalf("open %d bytes: %v", size, err)
		}
		if !bytes.Equal(got, plaintext) {
			t.Errorf("open %d bytes: got different plaintext", size)
		}
	}
	if _, err := seal(make([]byte, MaxSize+1), testPassphrase); !errors.Is(err, ErrTooLarge) {
		t.Errorf("seal beyond MaxSize: got %v, want %v", err, ErrTooLarge)
	}
}
