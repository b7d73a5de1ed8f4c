package testenv

// swaks, the SMTP test client, for the smtp integration tests.

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// Swaks returns the path of swaks, checking that it can speak TLS (it
// needs Net::SSLeay, Debian's libnet-ssleay-perl, which swaks only
// recommends). Without either the test is skipped, or fails with
// LEPROXY_INTEGRATION=require.
func Swaks(t testing.TB) string {
	t.Helper()
	bin := LookBinary(t, "swaks", "swaks")
	out, _ := exec.Command(bin, "--support").CombinedOutput()
	if !strings.Contains(string(out), "=== TLS supported") {
		Unavailable(t, "libnet-ssleay-perl", errors.New("swaks cannot speak TLS: "+strings.TrimSpace(string(out))))
	}
	return bin
}
