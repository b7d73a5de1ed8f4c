package backup

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"filippo.io/age"
	"filippo.io/age/armor"
)

// Backups are age files (https://age-encryption.org/v1): the tar stream
// encrypted to an scrypt recipient (the passphrase) or to X25519
// recipients. `age -d` decrypts one with the passphrase or the identity
// file alone. Restore also reads ASCII-armored age files and backups in
// the version 1 format of earlier leproxy releases (legacy.go).
const (
	ageMagic   = "age-encryption.org/v1\n"
	armorMagic = armor.Header
)

// Scrypt work factors (log2 N; age fixes r=8, p=1): memory is 2^logN KiB.
var (
	// writeWorkFactor is that of new backups: 128 MiB and a fraction of
	// a second. Tests lower it.
	writeWorkFactor = 17
	// maxWorkFactor is the most Restore accepts, checked before the key
	// is derived: 256 MiB, so that `age -p`'s default (18) restores too.
	maxWorkFactor = 18
)

// maxArchive bounds the bytes Restore reads: MaxSize of plaintext, age's
// 16 bytes per 64 KiB chunk and its nonce, and room for a header.
const maxArchive = MaxSize + (MaxSize/(64<<10)+1)*16 + 16 + 64<<10

// seal encrypts plaintext into a complete age file.
func seal(plaintext []byte, key *Key) ([]byte, error) {
	recipients, err := key.sealers()
	if err != nil {
		return nil, err
	}
	if len(plaintext) > MaxSize {
		return nil, ErrTooLarge
	}
	var out bytes.Buffer
	w, err := age.Encrypt(&out, recipients...)
	if err != nil {
		return nil, fmt.Errorf("backup: encrypting: %w", err)
	}
	if _, err := w.Write(plaintext); err != nil {
		return nil, fmt.Errorf("backup: encrypting: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("backup: encrypting: %w", err)
	}
	return out.Bytes(), nil
}

// open reads a complete archive from r, at most maxArchive bytes, and
// returns its authenticated plaintext. Nothing of the plaintext is
// returned unless all of it, up to age's final chunk, authenticated.
func open(r io.Reader, key *Key) ([]byte, error) {
	if key.empty() {
		return nil, ErrNoPassphrase
	}
	data, err := io.ReadAll(io.LimitReader(r, maxArchive+1))
	if err != nil {
		return nil, fmt.Errorf("backup: reading archive: %w", err)
	}
	if len(data) > maxArchive {
		return nil, ErrTooLarge
	}
	switch {
	case bytes.HasPrefix(data, []byte(ageMagic)):
		return openAge(bytes.NewReader(data), key)
	case bytes.HasPrefix(data, []byte(armorMagic)):
		return openAge(armor.NewReader(bytes.NewReader(data)), key)
	case bytes.HasPrefix(data, []byte(magic)):
		if key == nil || len(key.passphrase) == 0 {
			return nil, errors.New("backup: this backup is in the format of leproxy before age (version 1): restore it with its passphrase")
		}
		return openV1(bytes.NewReader(data), key.passphrase)
	}
	for _, m := range []string{ageMagic, armorMagic, magic} {
		if strings.HasPrefix(m, string(data)) {
			return nil, fmt.Errorf("%w: %d bytes", ErrTruncated, len(data))
		}
	}
	return nil, ErrNotBackup
}

// openAge decrypts an age file and reads all of its plaintext.
func openAge(r io.Reader, key *Key) ([]byte, error) {
	ids, err := key.openers()
	if err != nil {
		return nil, err
	}
	pr, err := age.Decrypt(r, ids...)
	if err != nil {
		return nil, ageError(err, key)
	}
	plaintext, err := io.ReadAll(io.LimitReader(pr, MaxSize+1))
	if err != nil {
		return nil, ageError(err, key)
	}
	if len(plaintext) > MaxSize {
		return nil, ErrTooLarge
	}
	return plaintext, nil
}

// ageError maps an error of age's to this package's errors, keeping age's
// words as the detail.
func ageError(err error, key *Key) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return fmt.Errorf("%w (%v)", ErrTruncated, err)
	}
	// age has no error value for it; TestRestoreRefused notices a change
	// of words.
	if strings.Contains(err.Error(), "work factor too large") {
		return fmt.Errorf("%w: %v (the most accepted is %d)", ErrUnsupportedParams, err, maxWorkFactor)
	}
	if nm := (*age.NoIdentityMatchError)(nil); errors.As(err, &nm) {
		if len(key.identities) > 0 {
			return fmt.Errorf("%w: no identity given opens it", ErrCorrupted)
		}
		return ErrCorrupted
	}
	return fmt.Errorf("%w (%v)", ErrCorrupted, err)
}
