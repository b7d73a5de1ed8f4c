package backup

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"filippo.io/age"
)

// A Key seals backups (Write) and opens them (Restore). It is either a
// passphrase, which does both, or age X25519 recipients (Write) or
// identities (Restore), so that a server can make backups that only the
// holder of a private key kept elsewhere can restore. The zero Key and a
// nil *Key hold nothing; using one is ErrNoPassphrase.
type Key struct {
	passphrase []byte
	recipients []age.Recipient
	identities []age.Identity
}

// Passphrase returns the Key of a passphrase, used byte for byte (no
// trimming). An empty passphrase makes Write and Restore fail with
// ErrNoPassphrase.
func Passphrase(p []byte) *Key {
	return &Key{passphrase: p}
}

// Recipients returns a Key that seals backups to the age X25519 public
// keys ("age1..."); it cannot open them.
func Recipients(keys ...string) (*Key, error) {
	k := new(Key)
	for _, s := range keys {
		r, err := age.ParseX25519Recipient(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("backup: recipient %q: %w", s, err)
		}
		k.recipients = append(k.recipients, r)
	}
	if len(k.recipients) == 0 {
		return nil, errors.New("backup: no recipient given")
	}
	return k, nil
}

// Identities returns a Key that opens backups sealed to the recipients of
// the age identities in r: an identity file as age-keygen writes it
// ("AGE-SECRET-KEY-1..." lines, # comments). It reads at most 64 KiB.
func Identities(r io.Reader) (*Key, error) {
	data, err := io.ReadAll(io.LimitReader(r, 64<<10+1))
	if err != nil {
		return nil, fmt.Errorf("backup: reading identities: %w", err)
	}
	if len(data) > 64<<10 {
		return nil, errors.New("backup: identity file larger than 64 KiB")
	}
	ids, err := age.ParseIdentities(strings.NewReader(string(data)))
	if err != nil {
		// age's parse errors quote the offending line, which may hold a
		// key: say only where it failed.
		return nil, errors.New("backup: not an age identity file (want AGE-SECRET-KEY-1... lines)")
	}
	return &Key{identities: ids}, nil
}

// empty reports whether k holds no passphrase, recipient or identity.
func (k *Key) empty() bool {
	return k == nil || len(k.passphrase) == 0 && len(k.recipients) == 0 && len(k.identities) == 0
}

// sealers returns the age recipients that Write encrypts to.
func (k *Key) sealers() ([]age.Recipient, error) {
	switch {
	case k == nil:
		return nil, ErrNoPassphrase
	case len(k.recipients) > 0:
		return k.recipients, nil
	case len(k.passphrase) > 0:
		r, err := age.NewScryptRecipient(string(k.passphrase))
		if err != nil {
			return nil, fmt.Errorf("backup: %w", err)
		}
		r.SetWorkFactor(writeWorkFactor)
		return []age.Recipient{r}, nil
	case len(k.identities) > 0:
		return nil, errors.New("backup: an identity opens backups; give the recipient (age1...) to write one")
	}
	return nil, ErrNoPassphrase
}

// openers returns the age identities that Restore decrypts with.
func (k *Key) openers() ([]age.Identity, error) {
	switch {
	case k == nil:
		return nil, ErrNoPassphrase
	case len(k.identities) > 0:
		return k.identities, nil
	case len(k.passphrase) > 0:
		id, err := age.NewScryptIdentity(string(k.passphrase))
		if err != nil {
			return nil, fmt.Errorf("backup: %w", err)
		}
		id.SetMaxWorkFactor(maxWorkFactor)
		return []age.Identity{id}, nil
	case len(k.recipients) > 0:
		return nil, errors.New("backup: a recipient (age1...) only writes backups; restore with its identity file")
	}
	return nil, ErrNoPassphrase
}
