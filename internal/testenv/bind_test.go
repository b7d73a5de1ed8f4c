package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestStartBIND checks that the throwaway named answers for its zone and
// takes an RFC 2136 update signed with its key (by nsupdate), and refuses
// one signed with another secret.
func TestStartBIND(t *testing.T) {
	key := NewTSIGKey(t, "test-key.")
	b := StartBIND(t, "example.test", key)
	nsupdate := LookBinary(t, "nsupdate", "bind9-dnsutils")
	host, port, _ := strings.Cut(b.Addr, ":")
	update := func(secret string) ([]byte, error) {
		script := fmt.Sprintf("server %s %s\nzone %s\nupdate add t.%s 60 TXT \"hello\"\nsend\n", host, port, b.Zone, b.Zone)
		keyFile := filepath.Join(t.TempDir(), "key.conf")
		if err := os.WriteFile(keyFile, []byte(fmt.Sprintf("key %q { algorithm %s; secret %q; };\n", key.Name, key.Algorithm, secret)), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(nsupdate, "-k", keyFile)
		cmd.Stdin = strings.NewReader(script)
		return cmd.CombinedOutput()
	}
	if out, err := update(NewTSIGKey(t, "x.").Secret); err == nil {
		t.Fatalf("nsupdate with a wrong secret succeeded: %s", out)
	}
	if got := b.TXT(t, "t."+b.Zone); len(got) != 0 {
		t.Fatalf("TXT after a refused update = %q, want none", got)
	}
	if out, err := update(key.Secret); err != nil {
		t.Fatalf("nsupdate: %v: %s\n%s", err, out, b.Log())
	}
	if got := b.TXT(t, "t."+b.Zone); !slices.Equal(got, []string{"hello"}) {
		t.Fatalf("TXT = %q, want [hello]", got)
	}
}
