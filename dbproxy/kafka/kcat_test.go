package kafka

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
	"github.com/leproxy/leproxy/internal/testenv"
)

// TestKcat drives leproxy with kcat, librdkafka's command-line client,
// over SSL with hostname verification: metadata, produce, and consume
// with a group. Only "localhost" resolves to leproxy here, so the cluster
// is one broker, whose backend address, in plaintext, librdkafka's SSL
// cannot speak to: every byte goes through leproxy.
func TestKcat(t *testing.T) {
	kcat := testenv.LookBinary(t, "kcat", "kcat")
	cl := testenv.StartKafka(t, 1, kfake.SeedTopics(1, "kcat"))
	proto, _ := dbproxy.Lookup("kafka")
	p := dbtest.StartProxy(t, dbtest.NewCA(t), dbproxy.Config{Protocol: proto,
		Routes: []dbproxy.Route{{Host: "localhost", Backend: cl.ListenAddrs()[0]}}})
	_, port, _ := strings.Cut(p.Addr, ":")
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, p.CA.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(stdin string, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		args = append([]string{"-b", "localhost:" + port, "-X", "security.protocol=ssl", "-X", "ssl.ca.location=" + ca,
			"-X", "ssl.endpoint.identification.algorithm=https"}, args...)
		cmd := exec.CommandContext(ctx, kcat, args...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.Output()
		if err != nil {
			stderr := ""
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = string(ee.Stderr)
			}
			t.Fatalf("kcat %v: %v\n%s%s", args, err, out, stderr)
		}
		return string(out)
	}

	var md struct {
		Brokers []struct {
			ID   int32  `json:"id"`
			Name string `json:"name"`
		} `json:"brokers"`
	}
	if err := json.Unmarshal([]byte(run("", "-L", "-J")), &md); err != nil {
		t.Fatalf("kcat -L -J: %v", err)
	}
	if len(md.Brokers) != 1 || md.Brokers[0].Name != "localhost:"+port {
		t.Errorf("kcat metadata brokers %+v, want localhost:%s", md.Brokers, port)
	}
	run("one\ntwo\nthree\n", "-P", "-t", "kcat")
	got := run("", "-G", "kcat-group", "-X", "auto.offset.reset=earliest", "-c", "3", "-q", "kcat")
	if got != "one\ntwo\nthree\n" {
		t.Errorf("kcat consumed %q, want the three messages", got)
	}
}
