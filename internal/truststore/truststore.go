// Package truststore installs a CA root certificate where the programs on
// this machine look for trusted roots, and removes it again: the system
// store (the bundle that OpenSSL, curl, Go's crypto/x509 and most other
// clients read) and the NSS databases of Chromium-based browsers
// ($HOME/.pki/nssdb) and of Firefox profiles.
//
// It drives the distribution's own tools rather than writing the bundle
// itself: the root goes into the anchors directory as
// leproxy-<fingerprint>.crt and the update command (update-ca-certificates
// on Debian and Ubuntu) rebuilds the bundle; NSS databases are changed
// with certutil (Debian package libnss3-tools). Entries are named after the
// root's SHA-256 fingerprint, so Install is idempotent and Uninstall
// removes only what Install added for that root.
//
// github.com/smallstep/truststore does the same for more systems, but is
// not a module this project can fetch; this package covers Linux, where
// leproxy runs as a daemon.
package truststore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// SystemStore is a distribution's store of trusted roots.
type SystemStore struct {
	Name   string   // for messages: the update command's name
	Dir    string   // where local roots go, one file each
	Ext    string   // the extension the update command looks for
	Update []string // the command that rebuilds the bundle
	// Remove rebuilds it after a removal; nil means Update.
	Remove []string
}

// systemStores are the stores Detect knows, tried in order.
var systemStores = []SystemStore{
	// Debian, Ubuntu, Alpine.
	// Without --fresh, Debian's rebuilds the bundle but leaves the removed
	// root's links in /etc/ssl/certs.
	{Name: "update-ca-certificates", Dir: "/usr/local/share/ca-certificates", Ext: ".crt", Update: []string{"update-ca-certificates"}, Remove: []string{"update-ca-certificates", "--fresh"}},
	// Fedora, RHEL, CentOS.
	{Name: "update-ca-trust", Dir: "/etc/pki/ca-trust/source/anchors", Ext: ".pem", Update: []string{"update-ca-trust", "extract"}},
	// Arch.
	{Name: "trust", Dir: "/etc/ca-certificates/trust-source/anchors", Ext: ".crt", Update: []string{"trust", "extract-compat"}},
	// openSUSE.
	{Name: "update-ca-certificates", Dir: "/etc/pki/trust/anchors", Ext: ".pem", Update: []string{"update-ca-certificates"}},
}

// Detect returns the system store of this machine: the first known one
// whose directory exists and whose update command is installed.
func Detect() (*SystemStore, error) {
	if runtime.GOOS != "linux" {
		return nil, fmt.Errorf("truststore: the system store of %s is not supported; add the root to it by hand", runtime.GOOS)
	}
	for _, s := range systemStores {
		if fi, err := os.Stat(s.Dir); err != nil || !fi.IsDir() {
			continue
		}
		if _, err := exec.LookPath(s.Update[0]); err != nil {
			continue
		}
		return &s, nil
	}
	return nil, errors.New("truststore: no system store found (on Debian and Ubuntu: apt-get install ca-certificates)")
}

// Options says which stores Install and Uninstall change.
type Options struct {
	// System is the system store; nil means Detect's, and no system store
	// found is an error.
	System *SystemStore
	// Home is the directory whose NSS databases are changed; "" means
	// $HOME.
	Home string
	// Certutil is the path of NSS's certutil; "" looks it up in $PATH.
	// Without it, the NSS databases are skipped with a note.
	Certutil string
}

// commandTimeout bounds each external command.
const commandTimeout = time.Minute

// Root is a CA certificate to trust, read from a PEM file.
type Root struct {
	Cert *x509.Certificate
	PEM  []byte
	File string
}

// ReadRoot reads the first certificate of a PEM file.
func ReadRoot(file string) (*Root, error) {
	data, err := os.ReadFile(file) // #nosec G304 -- the caller's root certificate file (the cache's local-ca/root.pem)
	if err != nil {
		return nil, fmt.Errorf("truststore: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("truststore: %s: no PEM certificate", file)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("truststore: %s: %w", file, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("truststore: %s: not a CA certificate", file)
	}
	return &Root{Cert: cert, PEM: pem.EncodeToMemory(block), File: file}, nil
}

// Fingerprint is the hex SHA-256 of the certificate, shortened to 16
// digits: the name of its entries.
func (r *Root) Fingerprint() string {
	sum := sha256.Sum256(r.Cert.Raw)
	return hex.EncodeToString(sum[:8])
}

// FileName is the root's file name in a system store's directory.
func (r *Root) FileName(s *SystemStore) string {
	return "leproxy-" + r.Fingerprint() + s.Ext
}

// Nickname is the root's name in NSS databases.
func (r *Root) Nickname() string {
	return "leproxy local CA " + r.Fingerprint()
}

// Install adds root to every store and returns one line for each store it
// looked at, saying what changed. A store that fails does not stop the
// others; the errors are joined.
func Install(ctx context.Context, root *Root, opts Options) ([]string, error) {
	return apply(ctx, root, opts, true)
}

// Uninstall removes what Install added for root.
func Uninstall(ctx context.Context, root *Root, opts Options) ([]string, error) {
	return apply(ctx, root, opts, false)
}

func apply(ctx context.Context, root *Root, opts Options, add bool) ([]string, error) {
	var report []string
	var errs []error
	sys := opts.System
	if sys == nil {
		var err error
		if sys, err = Detect(); err != nil {
			errs = append(errs, err)
		}
	}
	if sys != nil {
		line, err := applySystem(ctx, root, sys, add)
		if line != "" {
			report = append(report, line)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	lines, err := applyNSS(ctx, root, opts, add)
	report = append(report, lines...)
	if err != nil {
		errs = append(errs, err)
	}
	return report, errors.Join(errs...)
}

func applySystem(ctx context.Context, root *Root, s *SystemStore, add bool) (string, error) {
	path := filepath.Join(s.Dir, root.FileName(s))
	have, err := os.ReadFile(path) // #nosec G304 -- the store's own directory and a name made of a hex fingerprint
	switch {
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("truststore: system store: %w", err)
	case add && err == nil && bytes.Equal(have, root.PEM):
		return "system store: " + path + " already there", nil
	case !add && errors.Is(err, fs.ErrNotExist):
		return "system store: " + path + " not there, nothing to remove", nil
	}
	if add {
		err = os.WriteFile(path, root.PEM, 0o644) // #nosec G306 -- a public certificate, world-readable like its neighbours
	} else {
		err = os.Remove(path)
	}
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return "", fmt.Errorf("truststore: system store: %w (run as root, with sudo, to change it)", err)
		}
		return "", fmt.Errorf("truststore: system store: %w", err)
	}
	update := s.Update
	if !add && s.Remove != nil {
		update = s.Remove
	}
	if out, err := run(ctx, update[0], update[1:]...); err != nil {
		return "", fmt.Errorf("truststore: system store: %s: %w\n%s", strings.Join(update, " "), err, out)
	}
	if add {
		return fmt.Sprintf("system store: added %s and ran %s", path, strings.Join(update, " ")), nil
	}
	return fmt.Sprintf("system store: removed %s and ran %s", path, strings.Join(update, " ")), nil
}

// nssDatabases returns the NSS databases under home, as certutil -d
// arguments: Chromium's and every Firefox profile's (snap's too).
func nssDatabases(home string) []string {
	var dirs []string
	dirs = append(dirs, filepath.Join(home, ".pki", "nssdb"))
	for _, pattern := range []string{
		filepath.Join(home, ".mozilla", "firefox", "*"),
		filepath.Join(home, "snap", "firefox", "common", ".mozilla", "firefox", "*"),
	} {
		m, _ := filepath.Glob(pattern)
		dirs = append(dirs, m...)
	}
	var dbs []string
	for _, d := range dirs {
		switch {
		case exists(filepath.Join(d, "cert9.db")):
			dbs = append(dbs, "sql:"+d)
		case exists(filepath.Join(d, "cert8.db")):
			dbs = append(dbs, "dbm:"+d)
		}
	}
	return dbs
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func applyNSS(ctx context.Context, root *Root, opts Options, add bool) ([]string, error) {
	home := opts.Home
	if home == "" {
		var err error
		if home, err = os.UserHomeDir(); err != nil {
			return []string{"NSS: no home directory, browsers' stores skipped"}, nil
		}
	}
	dbs := nssDatabases(home)
	if len(dbs) == 0 {
		return []string{"NSS: no browser database under " + home + " (.pki/nssdb, Firefox profiles)"}, nil
	}
	certutil := opts.Certutil
	if certutil == "" {
		var err error
		if certutil, err = exec.LookPath("certutil"); err != nil {
			return []string{fmt.Sprintf("NSS: %d browser databases under %s skipped: certutil not found (apt-get install libnss3-tools)", len(dbs), home)}, nil
		}
	}
	var report []string
	var errs []error
	nick := root.Nickname()
	for _, db := range dbs {
		_, err := run(ctx, certutil, "-L", "-d", db, "-n", nick)
		present := err == nil
		switch {
		case add && present:
			report = append(report, fmt.Sprintf("NSS %s: %q already there", db, nick))
			continue
		case !add && !present:
			report = append(report, fmt.Sprintf("NSS %s: %q not there, nothing to remove", db, nick))
			continue
		}
		var out []byte
		if add {
			out, err = run(ctx, certutil, "-A", "-d", db, "-t", "C,,", "-n", nick, "-i", root.File)
		} else {
			out, err = run(ctx, certutil, "-D", "-d", db, "-n", nick)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("truststore: NSS %s: certutil: %w\n%s", db, err, out))
			continue
		}
		if add {
			report = append(report, fmt.Sprintf("NSS %s: added %q", db, nick))
		} else {
			report = append(report, fmt.Sprintf("NSS %s: removed %q", db, nick))
		}
	}
	return report, errors.Join(errs...)
}

func run(ctx context.Context, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	return exec.CommandContext(ctx, name, args...).CombinedOutput() // #nosec G204 -- fixed programs; arguments are paths and names of our own
}
