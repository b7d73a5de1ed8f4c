package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// etcdPackage is the Debian package with the etcd server binary.
const etcdPackage = "etcd-server"

// etcdReadyTimeout bounds how long a cluster (or a restarted member) may
// take to have a leader; measured at 2.6 s for three members here.
const etcdReadyTimeout = 30 * time.Second

// Etcd is a loopback etcd cluster that a test started from the etcd
// binary (Debian etcd-server, or $ETCD_BIN): every member on its own
// reserved client and peer ports, its data under t.TempDir().
type Etcd struct {
	// CAFile, ClientCertFile and ClientKeyFile are set by StartEtcdTLS:
	// the CA of the members' certificates (PEM) and a client certificate
	// (CN "leproxy") and key the members accept.
	CAFile, ClientCertFile, ClientKeyFile string

	t       testing.TB
	tls     *tls.Config // for the health checks; nil without TLS
	certs   etcdCerts
	bin     string
	dir     string
	cluster string // --initial-cluster

	mu      sync.Mutex
	members []*etcdMember
}

type etcdMember struct {
	name      string
	clientURL string
	peerURL   string
	dataDir   string
	proc      *process // nil while stopped
}

// StartEtcd starts an n-member etcd cluster for the test, waits until
// every member reports a leader (its /health is true) and stops it in
// t.Cleanup. It skips the test when etcd is not installed, or fails it
// under LEPROXY_INTEGRATION=require.
func StartEtcd(t testing.TB, n int) *Etcd {
	t.Helper()
	return startEtcd(t, n, false)
}

// StartEtcdTLS is StartEtcd with TLS on the client URLs
// (https://127.0.0.1:PORT) and client certificates required.
func StartEtcdTLS(t testing.TB, n int) *Etcd {
	t.Helper()
	return startEtcd(t, n, true)
}

func startEtcd(t testing.TB, n int, withTLS bool) *Etcd {
	t.Helper()
	bin := os.Getenv("ETCD_BIN")
	if bin == "" {
		bin = LookBinary(t, "etcd", etcdPackage)
	}
	e := &Etcd{t: t, bin: bin, dir: t.TempDir()}
	scheme := "http://"
	if withTLS {
		scheme = "https://"
		e.makeCerts(t)
	}
	var peers []string
	for i := range n {
		m := &etcdMember{
			name:      "m" + strconv.Itoa(i),
			clientURL: scheme + "127.0.0.1:" + strconv.Itoa(FreePort(t)),
			peerURL:   "http://127.0.0.1:" + strconv.Itoa(FreePort(t)),
		}
		m.dataDir = filepath.Join(e.dir, m.name)
		e.members = append(e.members, m)
		peers = append(peers, m.name+"="+m.peerURL)
	}
	e.cluster = strings.Join(peers, ",")
	for i := range e.members {
		e.start(i)
	}
	for i := range e.members {
		e.waitHealthy(i)
	}
	return e
}

// Endpoints returns every member's client URL (http://127.0.0.1:PORT).
func (e *Etcd) Endpoints() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, m := range e.members {
		out = append(out, m.clientURL)
	}
	return out
}

// StoreURL returns an etcd:// store URL naming every member, with prefix
// as its path.
func (e *Etcd) StoreURL(prefix string) string {
	var hosts []string
	for _, u := range e.Endpoints() {
		hosts = append(hosts, strings.TrimPrefix(strings.TrimPrefix(u, "http://"), "https://"))
	}
	return "etcd://" + strings.Join(hosts, ",") + "/" + strings.TrimPrefix(prefix, "/")
}

// Stop stops member i (SIGTERM, then SIGKILL after 10 s); its data stays
// for Restart.
func (e *Etcd) Stop(i int) {
	e.mu.Lock()
	m := e.members[i]
	p := m.proc
	m.proc = nil
	e.mu.Unlock()
	if p != nil {
		p.stop()
	}
}

// Kill ends member i at once with SIGKILL, as a crash would.
func (e *Etcd) Kill(i int) {
	e.mu.Lock()
	m := e.members[i]
	p := m.proc
	m.proc = nil
	e.mu.Unlock()
	if p != nil {
		p.stopOnce.Do(func() {
			syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		})
	}
}

// StopAll stops every member.
func (e *Etcd) StopAll() {
	for i := range e.members {
		e.Stop(i)
	}
}

// Restart starts stopped member i again on its data and ports; it does
// not wait (with fewer than a quorum running there is no leader to wait
// for). Use WaitHealthy.
func (e *Etcd) Restart(i int) {
	e.start(i)
}

// RestartAll restarts every stopped member and waits until each reports a
// leader.
func (e *Etcd) RestartAll() {
	e.t.Helper()
	for i, m := range e.members {
		e.mu.Lock()
		stopped := m.proc == nil
		e.mu.Unlock()
		if stopped {
			e.start(i)
		}
	}
	for i := range e.members {
		e.waitHealthy(i)
	}
}

// WaitHealthy waits until member i reports a leader.
func (e *Etcd) WaitHealthy(i int) {
	e.t.Helper()
	e.waitHealthy(i)
}

func (e *Etcd) start(i int) {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	m := e.members[i]
	if m.proc != nil {
		e.t.Fatalf("testenv: etcd member %s is running", m.name)
	}
	// Short heartbeats and elections: a test waits for a new leader in
	// well under a second. On restart the data directory overrides the
	// --initial-* flags.
	args := []string{
		"--name", m.name,
		"--data-dir", m.dataDir,
		"--listen-client-urls", m.clientURL,
		"--advertise-client-urls", m.clientURL,
		"--listen-peer-urls", m.peerURL,
		"--initial-advertise-peer-urls", m.peerURL,
		"--initial-cluster", e.cluster,
		"--initial-cluster-state", "new",
		"--initial-cluster-token", "leproxy-test",
		"--heartbeat-interval", "50",
		"--election-timeout", "500",
		"--snapshot-count", "10000",
		"--logger", "zap",
		"--log-level", "warn",
	}
	if e.tls != nil {
		args = append(args, "--cert-file", e.certs.serverCert, "--key-file", e.certs.serverKey,
			"--trusted-ca-file", e.CAFile, "--client-cert-auth")
	}
	cmd := exec.Command(e.bin, args...) // #nosec G204 -- the test's own etcd binary
	m.proc = startProcess(e.t, "etcd "+m.name, cmd)
}

// waitHealthy polls member i's /health until it reports a leader.
func (e *Etcd) waitHealthy(i int) {
	e.t.Helper()
	e.mu.Lock()
	m := e.members[i]
	p := m.proc
	e.mu.Unlock()
	if p == nil {
		e.t.Fatalf("testenv: etcd member %s is stopped", m.name)
	}
	client := &http.Client{Timeout: 2 * time.Second}
	if e.tls != nil {
		client.Transport = &http.Transport{TLSClientConfig: e.tls}
	}
	p.waitReady(e.t, etcdReadyTimeout, func() error {
		resp, err := client.Get(m.clientURL + "/health")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"health":"true"`) {
			return fmt.Errorf("etcd %s /health: %s %s", m.name, resp.Status, strings.TrimSpace(string(body)))
		}
		return nil
	})
}

// etcdCerts are the server certificate files of a TLS cluster.
type etcdCerts struct {
	serverCert, serverKey string
}

// makeCerts writes a CA, a server certificate for 127.0.0.1 and a client
// certificate into the test's directory and sets e's TLS fields.
func (e *Etcd) makeCerts(t testing.TB) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "leproxy test etcd CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	e.CAFile = writePEMBlocks(t, e.dir, "ca.pem", &pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	leaf := func(name string, serial int64, usage ...x509.ExtKeyUsage) (certFile, keyFile string, pair tls.Certificate) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: usage,
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		certFile = writePEMBlocks(t, e.dir, name+".pem", &pem.Block{Type: "CERTIFICATE", Bytes: der})
		keyFile = writePEMBlocks(t, e.dir, name+"-key.pem", &pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
		pair, err = tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		return certFile, keyFile, pair
	}
	e.certs.serverCert, e.certs.serverKey, _ = leaf("server", 2, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth) // etcd's gateway dials itself with it
	var client tls.Certificate
	e.ClientCertFile, e.ClientKeyFile, client = leaf("leproxy", 3, x509.ExtKeyUsageClientAuth)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	e.tls = &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{client}, MinVersion: tls.VersionTLS12}
}

// writePEMBlocks writes blocks to dir/name (mode 0600) and returns the path.
func writePEMBlocks(t testing.TB, dir, name string, blocks ...*pem.Block) string {
	t.Helper()
	var b []byte
	for _, bl := range blocks {
		b = append(b, pem.EncodeToMemory(bl)...)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
