// Package backup writes leproxy's certificate cache into one encrypted
// archive and restores it.
//
// A backup holds every regular file and directory under the cache
// directory (the ACME account keys, the certificates in autocert.DirCache
// format and their schedules, <name>+leproxy-state, so that a restored
// cache keeps its renewal windows and backoff, the local CA under
// local-ca/) with its path relative to the cache
// directory and its permission bits. Symbolic links, sockets, devices and
// other special files make Write fail: a backup never silently misses a
// file. Names at the top of the cache directory that start with ".leproxy-"
// (leproxy's own temporary files) are left out.
//
// The archive is a tar stream in an age file (filippo.io/age,
// https://age-encryption.org/v1), encrypted to a Key: a passphrase (age's
// scrypt recipient, so `age -d backup.age | tar -t` lists it) or age
// X25519 recipients (so a server can write backups with no secret of its
// own; the identity file restores them). age authenticates its header
// with a MAC and its payload in 64 KiB chunks up to a final one, so that
// altering, truncating or extending the file makes Restore fail. Restore
// also reads the version 1 format of earlier releases (legacy.go).
//
// Restore authenticates the archive and checks every entry (regular files
// and directories only, relative paths inside the cache directory, no
// duplicates, the size limit) before it writes anything. It then extracts
// into a new directory next to the cache directory, syncs it to disk and
// swaps it in place of the old cache directory, which is removed only once
// the new one is in place: the cache is either the old one or the restored
// one, never a mix. An existing cache is replaced, not merged.
package backup

import "errors"

// MaxSize bounds the archived cache: the tar stream of all files and
// directories (contents plus 512-byte headers) must fit in it. Write and
// Restore refuse anything larger with ErrTooLarge. A cache holds a few
// kilobytes per certificate.
const MaxSize = 64 << 20

// Errors returned by Write and Restore, possibly wrapped with details; test
// with errors.Is.
var (
	// ErrNoPassphrase means the Key is nil or its passphrase empty.
	ErrNoPassphrase = errors.New("backup: empty passphrase")
	// ErrNotBackup means the input does not start with the backup magic.
	ErrNotBackup = errors.New("backup: not a leproxy backup")
	// ErrUnsupportedVersion means a leproxy (version 1 format) archive
	// has a format version this leproxy does not know; it is followed by
	// the version number.
	ErrUnsupportedVersion = errors.New("backup: unsupported version")
	// ErrUnsupportedParams means the scrypt parameters in the header are
	// above the accepted cost (see age.go and legacy.go).
	ErrUnsupportedParams = errors.New("backup: unsupported scrypt parameters")
	// ErrTruncated means the input ends before the archive does.
	ErrTruncated = errors.New("backup: truncated archive")
	// ErrCorrupted means authentication failed: the passphrase or identity
	// is wrong or a byte of the archive was altered. The two cannot be
	// told apart.
	ErrCorrupted = errors.New("backup: wrong passphrase or corrupted archive")
	// ErrTooLarge means the cache or the archive exceeds MaxSize.
	ErrTooLarge = errors.New("backup: archive exceeds the 64 MiB limit")
	// ErrInvalidArchive means an authenticated archive holds an entry
	// that Restore refuses: a path outside the cache directory, a link or
	// special file, a duplicate, or a malformed tar stream.
	ErrInvalidArchive = errors.New("backup: invalid archive contents")
	// ErrUnsupportedFile means the cache directory holds a file that is
	// neither a regular file nor a directory (a symbolic link, a socket...).
	ErrUnsupportedFile = errors.New("backup: unsupported file in cache directory")
)
