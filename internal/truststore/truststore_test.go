package truststore

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/leproxy/leproxy/internal/testenv"
)

func writeRoot(t *testing.T, isCA bool) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "truststore test root"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  isCA,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "root.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestInstallUninstall runs both on a system store in a temporary
// directory (its update command logs its calls) and on NSS databases of a
// temporary home, twice each: the second run changes nothing.
func TestInstallUninstall(t *testing.T) {
	certutil := testenv.LookBinary(t, "certutil", "libnss3-tools")
	root, err := ReadRoot(writeRoot(t, true))
	if err != nil {
		t.Fatal(err)
	}
	anchors := t.TempDir()
	calls := filepath.Join(t.TempDir(), "calls")
	sys := &SystemStore{Name: "test", Dir: anchors, Ext: ".crt",
		Update: []string{"sh", "-c", "echo update >> " + calls},
		Remove: []string{"sh", "-c", "echo remove >> " + calls}}
	home := t.TempDir()
	db := filepath.Join(home, ".pki", "nssdb")
	if err := os.MkdirAll(db, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(certutil, "-N", "-d", "sql:"+db, "--empty-password").CombinedOutput(); err != nil {
		t.Fatalf("certutil -N: %v\n%s", err, out)
	}
	opts := Options{System: sys, Home: home}
	ctx := context.Background()
	anchor := filepath.Join(anchors, "leproxy-"+root.Fingerprint()+".crt")
	listed := func() bool {
		out, err := exec.Command(certutil, "-L", "-d", "sql:"+db).CombinedOutput()
		if err != nil {
			t.Fatalf("certutil -L: %v\n%s", err, out)
		}
		return strings.Contains(string(out), root.Nickname())
	}

	steps := []struct {
		apply       func(context.Context, *Root, Options) ([]string, error)
		want        []string
		wantPresent bool
		wantCalls   string
	}{
		{Install, []string{"system store: added " + anchor + " and ran sh -c", "NSS sql:" + db + ": added"}, true, "update\n"},
		{Install, []string{"system store: " + anchor + " already there", "NSS sql:" + db + ": \"" + root.Nickname() + "\" already there"}, true, "update\n"},
		{Uninstall, []string{"system store: removed " + anchor, "NSS sql:" + db + ": removed"}, false, "update\nremove\n"},
		{Uninstall, []string{"not there, nothing to remove", "not there, nothing to remove"}, false, "update\nremove\n"},
	}
	for i, st := range steps {
		lines, err := st.apply(ctx, root, opts)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if len(lines) != 2 {
			t.Fatalf("step %d: got %q, want two lines", i, lines)
		}
		for j, w := range st.want {
			if !strings.Contains(lines[j], w) {
				t.Errorf("step %d: line %q, want it to contain %q", i, lines[j], w)
			}
		}
		_, err = os.Stat(anchor)
		if (err == nil) != st.wantPresent || listed() != st.wantPresent {
			t.Errorf("step %d: anchor present %v, NSS lists it %v; want %v", i, err == nil, listed(), st.wantPresent)
		}
		if b, _ := os.ReadFile(calls); string(b) != st.wantCalls {
			t.Errorf("step %d: update commands ran %q, want %q", i, b, st.wantCalls)
		}
	}
}

func TestInstallErrors(t *testing.T) {
	if _, err := ReadRoot(writeRoot(t, false)); err == nil || !strings.Contains(err.Error(), "not a CA certificate") {
		t.Errorf("ReadRoot of a leaf: got %v", err)
	}
	root, err := ReadRoot(writeRoot(t, true))
	if err != nil {
		t.Fatal(err)
	}
	// A failing update command is reported with its output, and the NSS
	// side is still done (here: no database, said so).
	sys := &SystemStore{Name: "test", Dir: t.TempDir(), Ext: ".crt", Update: []string{"sh", "-c", "echo broken bundle; exit 3"}}
	lines, err := Install(context.Background(), root, Options{System: sys, Home: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "broken bundle") {
		t.Errorf("failing update: got %v", err)
	}
	if len(lines) != 1 || !strings.Contains(lines[0], "NSS: no browser database") {
		t.Errorf("failing update: lines %q, want the NSS note", lines)
	}
	missing := &SystemStore{Name: "test", Dir: filepath.Join(t.TempDir(), "missing"), Ext: ".crt", Update: []string{"true"}}
	if _, err := Install(context.Background(), root, Options{System: missing, Home: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "system store") {
		t.Errorf("missing anchors directory: got %v", err)
	}
}
