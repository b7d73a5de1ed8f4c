package backup

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"
)

// The version 1 writer of earlier releases, kept to make archives for the
// tests of the reader that Restore keeps.

// v1ProductionParams are the scrypt parameters version 1 archives were
// written with; TestMain lowers v1WriteParams.
var (
	v1ProductionParams = kdfParams{logN: 17, r: 8, p: 1}
	v1WriteParams      = v1ProductionParams
)

func (h *header) marshal() []byte {
	b := make([]byte, 0, headerSize)
	b = append(b, magic...)
	b = append(b, version1, h.params.logN, h.params.r, h.params.p)
	b = append(b, h.salt[:]...)
	b = append(b, h.nonce[:]...)
	return binary.BigEndian.AppendUint64(b, h.ctLen)
}

// sealV1 encrypts plaintext into a complete version 1 archive.
func sealV1(plaintext, passphrase []byte) ([]byte, error) {
	if len(passphrase) == 0 {
		return nil, ErrNoPassphrase
	}
	if len(plaintext) > MaxSize {
		return nil, ErrTooLarge
	}
	h := &header{params: v1WriteParams, ctLen: uint64(len(plaintext) + overhead)}
	if _, err := rand.Read(h.salt[:]); err != nil {
		return nil, fmt.Errorf("backup: generating salt: %w", err)
	}
	if _, err := rand.Read(h.nonce[:]); err != nil {
		return nil, fmt.Errorf("backup: generating nonce: %w", err)
	}
	key, err := deriveKey(passphrase, h.params, h.salt[:])
	if err != nil {
		return nil, err
	}
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, fmt.Errorf("backup: creating cipher: %w", err)
	}
	hdr := h.marshal()
	out := make([]byte, 0, len(hdr)+len(plaintext)+overhead)
	out = append(out, hdr...)
	return aead.Seal(out, h.nonce[:], plaintext, hdr), nil
}

// archiveV1Of returns a valid version 1 archive of a cache made of files.
func archiveV1Of(t *testing.T, files []testFile) []byte {
	t.Helper()
	plaintext, err := archiveDir(makeCache(t, filepath.Join(t.TempDir(), "src"), files))
	if err != nil {
		t.Fatal(err)
	}
	archive, err := sealV1(plaintext, testPassphrase.passphrase)
	if err != nil {
		t.Fatal(err)
	}
	return archive
}

// TestRestoreV1 restores a backup of an earlier release.
func TestRestoreV1(t *testing.T) {
	src := makeCache(t, filepath.Join(t.TempDir(), "src"), accountCache)
	plaintext, err := archiveDir(src)
	if err != nil {
		t.Fatal(err)
	}
	archive, err := sealV1(plaintext, testPassphrase.passphrase)
	if err != nil {
		t.Fatal(err)
	}
	cache := makeCache(t, filepath.Join(t.TempDir(), "leproxy"), otherCache)
	if err := Restore(bytes.NewReader(archive), cache, testPassphrase); err != nil {
		t.Fatalf("Restore of a version 1 archive: %v", err)
	}
	expectSnapshot(t, cache, snapshot(t, src))

	// An identity cannot open one: the error says which key it needs.
	id := newIdentity(t)
	before := snapshot(t, cache)
	err = Restore(bytes.NewReader(archiveV1Of(t, otherCache)), cache, id.Key)
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("version 1")) {
		t.Errorf("version 1 archive with an identity: got %v, want an error naming version 1", err)
	}
	expectSnapshot(t, cache, before)
}

func TestHeaderLayout(t *testing.T) {
	archive := archiveV1Of(t, otherCache)
	if got := string(archive[:len(magic)]); got != "LEPROXY-BACKUP" {
		t.Errorf("magic %q, want LEPROXY-BACKUP", got)
	}
	if got := archive[len(magic)]; got != 1 {
		t.Errorf("version %d, want 1", got)
	}
	p := archive[len(magic)+1 : len(magic)+4]
	if got := (kdfParams{p[0], p[1], p[2]}); got != v1WriteParams {
		t.Errorf("scrypt parameters %v, want %v", got, v1WriteParams)
	}
	if got, want := binary.BigEndian.Uint64(archive[headerSize-8:headerSize]), uint64(len(archive)-headerSize); got != want {
		t.Errorf("ciphertext length %d, want %d", got, want)
	}
	// Two archives of the same cache differ in salt, nonce and ciphertext.
	other := archiveV1Of(t, otherCache)
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
	archive := archiveV1Of(t, otherCache)
	h, hdr, err := readHeader(bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	key, err := deriveKey(testPassphrase.passphrase, h.params, h.salt[:])
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
		{v1ProductionParams, nil},
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

func TestSealOpenV1(t *testing.T) {
	for _, size := range []int{0, 1, 1000, 1 << 20} {
		plaintext := bytes.Repeat([]byte{0xa5}, size)
		archive, err := sealV1(bytes.Clone(plaintext), testPassphrase.passphrase)
		if err != nil {
			t.Fatalf("seal %d bytes: %v", size, err)
		}
		if got, want := len(archive), headerSize+size+overhead; got != want {
			t.Errorf("archive of %d bytes is %d bytes, want %d", size, got, want)
		}
		got, err := openV1(bytes.NewReader(archive), testPassphrase.passphrase)
		if err != nil {
			t.Fatalf("open %d bytes: %v", size, err)
		}
		if !bytes.Equal(got, plaintext) {
			t.Errorf("open %d bytes: got different plaintext", size)
		}
	}
	if _, err := sealV1(make([]byte, MaxSize+1), testPassphrase.passphrase); !errors.Is(err, ErrTooLarge) {
		t.Errorf("seal beyond MaxSize: got %v, want %v", err, ErrTooLarge)
	}
}

func TestRestoreRefusedV1(t *testing.T) {
	valid := archiveV1Of(t, accountCache)
	withVersion := bytes.Clone(valid)
	withVersion[len(magic)] = 2
	hugeN := bytes.Clone(valid)
	hugeN[len(magic)+1], hugeN[len(magic)+2] = 40, 8
	hugeLen := bytes.Clone(valid)
	copy(hugeLen[headerSize-8:], []byte{0, 0, 0, 0, 0x10, 0, 0, 0})
	tests := []struct {
		name       string
		archive    []byte
		passphrase string // the right one when empty
		want       error
		wantText   string
	}{
		{name: "wrong passphrase", archive: valid, passphrase: "Correct horse battery staple", want: ErrCorrupted,
			wantText: "backup: wrong passphrase or corrupted archive"},
		{name: "short and not a backup", archive: []byte("LEPROXY-X"), want: ErrNotBackup},
		{name: "unsupported version", archive: withVersion, want: ErrUnsupportedVersion,
			wantText: "backup: unsupported version 2"},
		{name: "scrypt N=2^40", archive: hugeN, want: ErrUnsupportedParams},
		{name: "length beyond the limit", archive: hugeLen, want: ErrTooLarge},
		{name: "trailing data", archive: append(bytes.Clone(valid), 0), want: ErrCorrupted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent := t.TempDir()
			cache := makeCache(t, filepath.Join(parent, "leproxy"), otherCache)
			before := snapshot(t, cache)
			passphrase := testPassphrase
			if tt.passphrase != "" {
				passphrase = Passphrase([]byte(tt.passphrase))
			}
			err := Restore(bytes.NewReader(tt.archive), cache, passphrase)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got error %v, want %v", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), tt.wantText) {
				t.Errorf("got message %q, want it to start with %q", err, tt.wantText)
			}
			expectSnapshot(t, cache, before)
			expectOnly(t, parent, "leproxy")
		})
	}
}

func TestRestoreTruncatedV1(t *testing.T) {
	valid := archiveV1Of(t, accountCache)
	parent := t.TempDir()
	cache := makeCache(t, filepath.Join(parent, "leproxy"), otherCache)
	before := snapshot(t, cache)
	offsets := []int{0, 1, len(magic) - 1, len(magic), len(magic) + 1, 20, headerSize - 1, headerSize,
		headerSize + 1, headerSize + 100, len(valid) / 2, len(valid) - overhead, len(valid) - 1}
	for _, n := range offsets {
		err := Restore(bytes.NewReader(valid[:n]), cache, testPassphrase)
		if !errors.Is(err, ErrTruncated) {
			t.Errorf("truncated to %d of %d bytes: got error %v, want %v", n, len(valid), err, ErrTruncated)
		}
	}
	expectSnapshot(t, cache, before)
	expectOnly(t, parent, "leproxy")
}

func TestRestoreAlteredByteV1(t *testing.T) {
	valid := archiveV1Of(t, accountCache)
	parent := t.TempDir()
	cache := makeCache(t, filepath.Join(parent, "leproxy"), otherCache)
	before := snapshot(t, cache)

	const (
		versionAt = len(magic)
		paramsAt  = versionAt + 1
		saltAt    = paramsAt + 3
		lengthAt  = headerSize - 8
	)
	// Every header byte, a spread of ciphertext bytes, and the whole tag.
	var offsets []int
	for i := 0; i < headerSize; i++ {
		offsets = append(offsets, i)
	}
	for i := headerSize; i < len(valid)-overhead; i += 97 {
		offsets = append(offsets, i)
	}
	for i := len(valid) - overhead; i < len(valid); i++ {
		offsets = append(offsets, i)
	}
	for _, off := range offsets {
		var allowed []error
		switch {
		case off < versionAt:
			allowed = []error{ErrNotBackup}
		case off == versionAt:
			allowed = []error{ErrUnsupportedVersion}
		case off < saltAt:
			allowed = []error{ErrUnsupportedParams, ErrCorrupted}
		case off >= lengthAt && off < headerSize:
			allowed = []error{ErrTruncated, ErrTooLarge, ErrCorrupted}
		default: // salt, nonce, ciphertext, tag
			allowed = []error{ErrCorrupted}
		}
		for _, mask := range []byte{0x01, 0x80} {
			altered := bytes.Clone(valid)
			altered[off] ^= mask
			err := Restore(bytes.NewReader(altered), cache, testPassphrase)
			if !isOneOf(err, allowed) {
				t.Errorf("byte %d of %d ^ %#x: got error %v, want one of %v", off, len(valid), mask, err, allowed)
			}
		}
	}
	expectSnapshot(t, cache, before)
	expectOnly(t, parent, "leproxy")
}
