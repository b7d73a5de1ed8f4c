package backup

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"filippo.io/age"
)

const testPassphraseText = "correct horse battery staple"

var testPassphrase = Passphrase([]byte(testPassphraseText))

// productionWorkFactor is the scrypt work factor of real backups; TestMain
// lowers writeWorkFactor so that tests run fast.
var productionWorkFactor = writeWorkFactor

func TestMain(m *testing.M) {
	writeWorkFactor = 4
	v1WriteParams = kdfParams{logN: 4, r: 1, p: 1}
	os.Exit(m.Run())
}

// testFile is a file or directory of a test cache.
type testFile struct {
	name string // slash-separated; a trailing slash makes a directory
	mode fs.FileMode
	data string
}

// accountCache is a cache like leproxy's: an ACME account, certificates,
// and the local CA, plus a nested directory with unusual modes.
var accountCache = []testFile{
	{name: "acme_account+key", mode: 0o600, data: "-----BEGIN EC PRIVATE KEY-----\naccount\n-----END EC PRIVATE KEY-----\n"},
	{name: "www.example.com", mode: 0o600, data: "key and chain of www.example.com"},
	{name: "www.example.com+rsa", mode: 0o600, data: "rsa key and chain"},
	{name: "www.example.com+leproxy-state", mode: 0o600, data: `{"version":1,"failures":2}`}, // the schedule: carried
	{name: "acme_account+key+acme.zerossl.com-v2-dv90", mode: 0o600, data: "second issuer's account"},
	{name: "db.example.com", mode: 0o600, data: strings.Repeat("certificate bytes ", 500)},
	{name: "empty", mode: 0o644},
	{name: "local-ca/", mode: 0o700},
	{name: "local-ca/root.pem", mode: 0o644, data: "-----BEGIN CERTIFICATE-----\nroot\n-----END CERTIFICATE-----\n"},
	{name: "local-ca/root-key.pem", mode: 0o600, data: "-----BEGIN PRIVATE KEY-----\nroot key\n-----END PRIVATE KEY-----\n"},
	{name: "extra/", mode: 0o750},
	{name: "extra/deeper/", mode: 0o700},
	{name: "extra/deeper/read-only", mode: 0o400, data: "r"},
	{name: "extra/group", mode: 0o640, data: "g"},
}

// otherCache is the content of a cache that restores must replace, or
// leave untouched when they fail.
var otherCache = []testFile{
	{name: "acme_account+key", mode: 0o600, data: "another account"},
	{name: "old.example.com", mode: 0o600, data: "old certificate"},
	{name: "local-ca/", mode: 0o700},
	{name: "local-ca/root.pem", mode: 0o644, data: "another root"},
}

// makeCache creates a cache directory (mode 0700) holding files.
func makeCache(t *testing.T, dir string, files []testFile) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		p := filepath.Join(dir, filepath.FromSlash(strings.TrimSuffix(f.name, "/")))
		if strings.HasSuffix(f.name, "/") {
			if err := os.MkdirAll(p, 0o700); err != nil {
				t.Fatal(err)
			}
		} else if err := os.WriteFile(p, []byte(f.data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Modes last, so that read-only directories do not stop the writes.
	for i := len(files) - 1; i >= 0; i-- {
		f := files[i]
		if err := os.Chmod(filepath.Join(dir, filepath.FromSlash(strings.TrimSuffix(f.name, "/"))), f.mode); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// snapshot describes every file and directory under dir, dir included:
// relative path → type, mode and SHA-256 of the content.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	snap := make(map[string]string)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		desc := info.Mode().String()
		if info.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(data)
			desc += " " + hex.EncodeToString(sum[:])
		}
		snap[filepath.ToSlash(rel)] = desc
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot of %s: %v", dir, err)
	}
	return snap
}

// expectSnapshot fails unless dir matches want.
func expectSnapshot(t *testing.T, dir string, want map[string]string) {
	t.Helper()
	got := snapshot(t, dir)
	if diff := diffSnapshots(got, want); diff != "" {
		t.Errorf("%s differs:\n%s", dir, diff)
	}
}

func diffSnapshots(got, want map[string]string) string {
	var lines []string
	for name, w := range want {
		if g, ok := got[name]; !ok {
			lines = append(lines, fmt.Sprintf("  %s: missing, want %s", name, w))
		} else if g != w {
			lines = append(lines, fmt.Sprintf("  %s: got %s, want %s", name, g, w))
		}
	}
	for name, g := range got {
		if _, ok := want[name]; !ok {
			lines = append(lines, fmt.Sprintf("  %s: unexpected %s", name, g))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// expectOnly fails unless dir holds exactly names.
func expectOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, de := range des {
		got = append(got, de.Name())
	}
	sort.Strings(names)
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Errorf("%s holds %q, want %q", dir, got, names)
	}
}

// archiveOf returns a valid archive of a cache made of files.
func archiveOf(t *testing.T, files []testFile) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Write(&buf, makeCache(t, filepath.Join(t.TempDir(), "src"), files), testPassphrase); err != nil {
		t.Fatalf("Write: %v", err)
	}
	return buf.Bytes()
}

// rawTar builds a tar stream from arbitrary headers; a header's Size is
// set from its content unless content is nil.
func rawTar(t testing.TB, entries ...rawEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.h
		if e.content != nil {
			h.Size = int64(len(e.content))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("tar header %q: %v", h.Name, err)
		}
		if _, err := tw.Write(e.content); err != nil {
			t.Fatalf("tar content %q: %v", h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type rawEntry struct {
	h       tar.Header
	content []byte
}

func regular(name string, mode int64, content string) rawEntry {
	return rawEntry{h: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode}, content: []byte(content)}
}

func directory(name string, mode int64) rawEntry {
	return rawEntry{h: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode}}
}

// sealTar encrypts arbitrary tar bytes into a valid archive, as a writer
// holding the passphrase could.
func sealTar(t *testing.T, tarData []byte) []byte {
	t.Helper()
	archive, err := seal(bytes.Clone(tarData), testPassphrase)
	if err != nil {
		t.Fatalf("seal: %v", err)
	}
	return archive
}

// sealWith encrypts arbitrary plaintext to key.
func sealWith(t *testing.T, key *Key, plaintext []byte) []byte {
	t.Helper()
	archive, err := seal(bytes.Clone(plaintext), key)
	if err != nil {
		t.Fatalf("seal: %v", err)
	}
	return archive
}

// identity is an age X25519 key pair; file is its identity file.
type identity struct {
	*Key
	recipient string
	file      string
}

func newIdentity(t *testing.T) identity {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "key.txt")
	text := "# created: by the test\n# public key: " + id.Recipient().String() + "\n" + id.String() + "\n"
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	key, err := Identities(strings.NewReader(text))
	if err != nil {
		t.Fatalf("Identities: %v", err)
	}
	return identity{Key: key, recipient: id.Recipient().String(), file: file}
}

func (id identity) recipientKey(t *testing.T) *Key {
	t.Helper()
	k, err := Recipients(id.recipient)
	if err != nil {
		t.Fatalf("Recipients: %v", err)
	}
	return k
}
