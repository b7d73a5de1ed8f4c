package mysql

import (
	"context"
	"crypto/tls"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
	"github.com/leproxy/leproxy/internal/certs"
	"github.com/leproxy/leproxy/internal/testenv"
)

// Integration tests: a real MariaDB started by the test, real clients
// (go-sql-driver/mysql, the mariadb command-line client) verifying
// leproxy's certificate.

// mariaDBAccounts are the accounts startMariaDBBackend creates: a
// mysql_native_password user, a MariaDB client_ed25519 user and a second
// native user to change to, all with the database app.
const mariaDBAccounts = `
INSTALL SONAME 'auth_ed25519';
CREATE USER nat@'%' IDENTIFIED BY 'natpw';
CREATE USER ed@'%' IDENTIFIED VIA ed25519 USING PASSWORD('edpw');
CREATE USER other@'%' IDENTIFIED BY 'otherpw';
CREATE DATABASE app;
GRANT ALL ON app.* TO nat@'%';
GRANT ALL ON app.* TO ed@'%';
GRANT ALL ON app.* TO other@'%';
GRANT SELECT ON performance_schema.* TO nat@'%';
`

// startMariaDBBackend starts MariaDB with LOAD DATA LOCAL allowed, packets
// up to 64 MiB and the accounts of mariaDBAccounts.
func startMariaDBBackend(t *testing.T, opts testenv.MariaDBOptions) *testenv.MariaDB {
	t.Helper()
	opts.Args = append(opts.Args, "--local-infile=1", "--max-allowed-packet=64M", "--performance-schema=ON")
	m := testenv.StartMariaDB(t, opts)
	m.Exec(t, mariaDBAccounts)
	return m
}

// certSourceWithIP is a GetCertificate that knows names; the certificate
// of the first also holds the address 127.0.0.1, for clients that are
// given the address and send no server name.
func certSourceWithIP(t *testing.T, ca *dbtest.CA, names ...string) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	certs := make(map[string]*tls.Certificate)
	for i, n := range names {
		sans := []string{n}
		if i == 0 {
			sans = append(sans, "127.0.0.1")
		}
		c, _, _ := ca.Issue(t, sans...)
		certs[n] = &c
	}
	return func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		if c, ok := certs[hello.ServerName]; ok {
			return c, nil
		}
		return nil, fmt.Errorf("no certificate for %q", hello.ServerName)
	}
}

func TestMySQLIntegrationMariaDB(t *testing.T) {
	m := startMariaDBBackend(t, testenv.MariaDBOptions{})
	if got := m.Exec(t, "SELECT @@have_ssl"); got != "DISABLED" {
		t.Fatalf("backend have_ssl = %q, want DISABLED: this test is about a backend without TLS", got)
	}
	ca := dbtest.NewCA(t)
	// localhost is the default route, for the mariadb client, which sends
	// no server name: it gets the default's certificate and checks it
	// for the host it was given.
	p := startProxy(t, ca, dbproxy.Config{
		Routes: []dbproxy.Route{
			{Host: "localhost", Backend: m.Addr},
			{Host: "db.test", Backend: m.Addr},
		},
		Default:        "localhost",
		GetCertificate: certSourceWithIP(t, ca, "localhost", "db.test"),
	})
	tlsDB := ca.ClientConfig("db.test", "db.test")
	open := func(t *testing.T, user, password string, mod func(*gomysql.Config)) *sql.DB {
		return openDB(t, p.Addr, tlsDB, user, password, func(c *gomysql.Config) {
			c.DBName = "app"
			if mod != nil {
				mod(c)
			}
		})
	}
	ctx := func(t *testing.T) context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		t.Cleanup(cancel)
		return ctx
	}

	t.Run("native password: queries, transactions, prepared statements", func(t *testing.T) {
		db := open(t, "nat", "natpw", nil)
		if got := queryString(t, db, "SELECT CURRENT_USER()"); got != "nat@%" {
			t.Errorf("CURRENT_USER() = %q, want nat@%%", got)
		}
		if got := queryString(t, db, "SELECT DATABASE()"); got != "app" {
			t.Errorf("DATABASE() = %q, want app", got)
		}
		// The backend link is plain.
		if got := queryString(t, db, "SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'SSL_CIPHER'"); got != "" {
			t.Errorf("backend session cipher %q, want none", got)
		}
		c := ctx(t)
		if _, err := db.ExecContext(c, "CREATE TABLE tx (id INT PRIMARY KEY, v VARCHAR(20))"); err != nil {
			t.Fatal(err)
		}
		for _, commit := range []bool{false, true} {
			tx, err := db.BeginTx(c, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.ExecContext(c, "INSERT INTO tx VALUES (?, ?)", 1, fmt.Sprint(commit)); err != nil {
				t.Fatal(err)
			}
			if commit {
				err = tx.Commit()
			} else {
				err = tx.Rollback()
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		stmt, err := db.PrepareContext(c, "SELECT v FROM tx WHERE id = ?")
		if err != nil {
			t.Fatal(err)
		}
		defer stmt.Close()
		var v string
		if err := stmt.QueryRowContext(c, 1).Scan(&v); err != nil || v != "true" {
			t.Errorf("prepared statement: got %q, %v; want the committed row, true", v, err)
		}
		if err := stmt.QueryRowContext(c, 2).Scan(&v); !errors.Is(err, sql.ErrNoRows) {
			t.Errorf("prepared statement for a missing row: %v, want no rows", err)
		}
	})

	t.Run("ed25519", func(t *testing.T) {
		db := open(t, "ed", "edpw", nil)
		if got := queryString(t, db, "SELECT CURRENT_USER()"); got != "ed@%" {
			t.Errorf("CURRENT_USER() = %q, want ed@%%", got)
		}
	})

	t.Run("wrong password is refused with the backend's own text", func(t *testing.T) {
		for _, user := range []string{"nat", "ed", "nobody"} {
			err := pingErr(open(t, user, "wrong", nil))
			if err == nil {
				t.Fatalf("%s: login with a wrong password succeeded", user)
			}
			want := fmt.Sprintf("Access denied for user '%s'@'127.0.0.1' (using password: YES)", user)
			if me := serverError(t, err); me.Number != 1045 || me.SQLState != [5]byte([]byte("28000")) || me.Message != want {
				t.Errorf("%s: got error %d %s %q, want 1045 28000 %q", user, me.Number, me.SQLState, me.Message, want)
			}
		}
	})

	t.Run("results and arguments larger than 16 MiB", func(t *testing.T) {
		db := open(t, "nat", "natpw", nil)
		const n = 17 << 20
		var got string
		if err := db.QueryRowContext(ctx(t), "SELECT REPEAT('x', ?)", n).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if len(got) != n || strings.Trim(got, "x") != "" {
			t.Errorf("got %d bytes, want %d x", len(got), n)
		}
		var length int
		if err := db.QueryRowContext(ctx(t), "SELECT LENGTH(?)", strings.Repeat("y", n)).Scan(&length); err != nil || length != n {
			t.Errorf("LENGTH of a %d-byte argument: got %d, %v", n, length, err)
		}
	})

	t.Run("multi-statements", func(t *testing.T) {
		db := open(t, "nat", "natpw", func(c *gomysql.Config) { c.MultiStatements = true })
		c := ctx(t)
		if _, err := db.ExecContext(c, "CREATE TABLE multi (id INT); INSERT INTO multi VALUES (1); INSERT INTO multi VALUES (2)"); err != nil {
			t.Fatal(err)
		}
		rows, err := db.QueryContext(c, "SELECT COUNT(*) FROM multi; SELECT 'second'")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var got []string
		for {
			for rows.Next() {
				var s string
				if err := rows.Scan(&s); err != nil {
					t.Fatal(err)
				}
				got = append(got, s)
			}
			if !rows.NextResultSet() {
				break
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		if strings.Join(got, ",") != "2,second" {
			t.Errorf("results %q, want 2 and second", got)
		}
	})

	t.Run("LOAD DATA LOCAL INFILE", func(t *testing.T) {
		db := open(t, "nat", "natpw", nil)
		c := ctx(t)
		if _, err := db.ExecContext(c, "CREATE TABLE loaded (id INT, v VARCHAR(40))"); err != nil {
			t.Fatal(err)
		}
		// Enough lines for many packets, and for their sequence ids to
		// wrap around.
		const lines = 20000
		var b strings.Builder
		for i := range lines {
			fmt.Fprintf(&b, "%d,line number %d of the file\n", i, i)
		}
		path := filepath.Join(t.TempDir(), "data.csv")
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		gomysql.RegisterLocalFile(path)
		t.Cleanup(func() { gomysql.DeregisterLocalFile(path) })
		res, err := db.ExecContext(c, "LOAD DATA LOCAL INFILE '"+path+"' INTO TABLE loaded FIELDS TERMINATED BY ','")
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := res.RowsAffected(); n != lines {
			t.Errorf("loaded %d rows, want %d", n, lines)
		}
		if got := queryString(t, db, "SELECT v FROM loaded WHERE id = 12345"); got != "line number 12345 of the file" {
			t.Errorf("row 12345 = %q", got)
		}
	})

	t.Run("connection attributes", func(t *testing.T) {
		db := open(t, "nat", "natpw", func(c *gomysql.Config) { c.ConnectionAttributes = "program:leproxy-it" })
		db.SetMaxOpenConns(1)
		got := queryString(t, db, "SELECT ATTR_VALUE FROM performance_schema.session_connect_attrs WHERE PROCESSLIST_ID = CONNECTION_ID() AND ATTR_NAME = 'program'")
		if got != "leproxy-it" {
			t.Errorf("attribute program = %q, want leproxy-it", got)
		}
	})

	t.Run("compression asked for is cleared", func(t *testing.T) {
		db := open(t, "nat", "natpw", func(c *gomysql.Config) { c.Apply(gomysql.EnableCompression(true)) })
		if got := queryString(t, db, "SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'COMPRESSION'"); got != "OFF" {
			t.Errorf("backend session compression %q, want OFF", got)
		}
	})

	t.Run("COM_RESET_CONNECTION and COM_CHANGE_USER", func(t *testing.T) {
		c := dialRawClient(t, p.Addr)
		c.startTLS(ca, "db.test", "db.test")
		if pkt := c.login("nat", "natpw", "app"); pkt[0] != headerOK {
			t.Fatalf("login: got %x", pkt)
		}
		c.query("SET @x = 42")
		if got := c.query("SELECT @x"); got != "42" {
			t.Fatalf("@x = %q, want 42", got)
		}
		if pkt := c.command([]byte{0x1f}); pkt[0] != headerOK {
			t.Fatalf("COM_RESET_CONNECTION: got %x, want OK", pkt)
		}
		if got := c.query("SELECT @x"); got != "NULL" {
			t.Errorf("@x after COM_RESET_CONNECTION = %q, want NULL", got)
		}
		c.query("SET @x = 7")
		// A client answers COM_CHANGE_USER with the nonce it kept: the
		// backend's from the last exchange, or the greeting's
		// (leproxy's). leproxy has the backend ask again with an
		// AuthSwitchRequest, whose nonce clients that follow it (MySQL's,
		// this one) answer, so both work.
		for _, change := range []struct {
			user, password string
			nonce          []byte
		}{
			{"other", "otherpw", c.nonce},
			{"nat", "natpw", c.greeting.authData},
		} {
			pkt := c.command(changeUserPacket(change.user, nativeScramble(change.password, change.nonce), "app"))
			if pkt = c.authenticateFrom(pkt, change.password); pkt[0] != headerOK {
				t.Fatalf("COM_CHANGE_USER to %s: got %x, want OK", change.user, pkt)
			}
			want := change.user + "@% app unset"
			if got := c.query("SELECT CONCAT(CURRENT_USER(), ' ', DATABASE(), ' ', COALESCE(@x, 'unset'))"); got != want {
				t.Errorf("after COM_CHANGE_USER: %q, want %q", got, want)
			}
		}
	})

	t.Run("mariadb client with --ssl-verify-server-cert", func(t *testing.T) {
		bin, err := exec.LookPath("mariadb")
		if err != nil {
			if os.Getenv("LEPROXY_INTEGRATION") == "require" {
				t.Fatalf("mariadb client required: %v", err)
			}
			t.Skipf("no mariadb client (Debian package mariadb-client): %v", err)
		}
		_, port, _ := net.SplitHostPort(p.Addr)
		caPEM := writeCAFile(t, ca)
		run := func(host, caFile string) (string, error) {
			c, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			out, err := exec.CommandContext(c, bin, "--no-defaults", "--protocol=TCP", "--host="+host, "--port="+port,
				"--user=nat", "--password=natpw", "--database=app",
				"--ssl", "--ssl-ca="+caFile, "--ssl-verify-server-cert",
				"--batch", "--skip-column-names",
				"-e", "SELECT CONCAT(CURRENT_USER(), ' ', @@hostname IS NOT NULL)").CombinedOutput()
			return strings.TrimSpace(string(out)), err
		}
		// localhost resolves to 127.0.0.1 (/etc/hosts). The client
		// (MariaDB 10.11's) sends no server name and checks the
		// certificate for the host it was given, name or address.
		cliSessions := func() int {
			n := 0
			for _, rec := range p.Logs.Records(t, "session end") {
				if rec["route"] == "localhost" && rec["sni"] == "" && rec["user"] == "nat" {
					n++
				}
			}
			return n
		}
		for i, host := range []string{"localhost", "127.0.0.1"} {
			out, err := run(host, caPEM)
			if err != nil || out != "nat@% 1" {
				t.Errorf("mariadb --host=%s: %q, %v; want nat@%% 1", host, out, err)
				continue
			}
			dbtest.WaitFor(t, "the session on the default route in the log", func() bool { return cliSessions() == i+1 })
		}
		// The certificate is checked: another CA is refused.
		if out, err := run("localhost", writeCAFile(t, dbtest.NewCA(t))); err == nil {
			t.Errorf("mariadb with the wrong CA succeeded: %q", out)
		}
	})

	t.Run("Pebble-issued certificate", func(t *testing.T) {
		httpPort, tlsPort := testenv.FreePort(t), testenv.FreePort(t)
		pb := testenv.StartPebble(t, httpPort, tlsPort)
		cm, err := certs.New(certs.Config{CacheDir: t.TempDir(), DirectoryURL: pb.DirectoryURL, RootCAs: pb.ServerRoots})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cm.Close() })
		const host = "db.example.test"
		cm.SetHosts([]string{host})
		// Pebble validates by tls-alpn-01 on tlsPort.
		l, err := tls.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(tlsPort)), cm.TLSConfig())
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		t.Cleanup(func() { l.Close(); <-done })
		go func() {
			defer close(done)
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.SetDeadline(time.Now().Add(10 * time.Second))
				c.(*tls.Conn).Handshake()
				c.Close()
			}
		}()
		// The first handshake waits for Pebble to issue the certificate,
		// which takes a while on a loaded machine.
		pp := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{{Host: host, Backend: m.Addr}},
			GetCertificate: cm.GetCertificate, HandshakeTimeout: 2 * time.Minute})
		db := openDB(t, pp.Addr, &tls.Config{ServerName: host, RootCAs: pb.IssuerRoots(t)}, "ed", "edpw", nil)
		if got := queryString(t, db, "SELECT CURRENT_USER()"); got != "ed@%" {
			t.Errorf("CURRENT_USER() = %q, want ed@%%", got)
		}
	})
}

// changeUserPacket is a COM_CHANGE_USER for user with a
// mysql_native_password answer, as a client with the capabilities of
// rawClient sends it.
func changeUserPacket(user string, auth []byte, db string) []byte {
	b := append([]byte{0x11}, user...)
	b = append(b, 0, byte(len(auth)))
	b = append(b, auth...)
	b = append(b, db...)
	b = append(b, 0)
	b = binary.LittleEndian.AppendUint16(b, 45)
	b = append(b, "mysql_native_password\x00"...)
	attrs := []byte("\x0c_client_name\x05rawMy")
	b = appendLenencInt(b, uint64(len(attrs)))
	return append(b, attrs...)
}

// A backend with TLS of its own, which refuses plaintext connections
// (require_secure_transport), reached with tls: verify.
func TestMySQLIntegrationMariaDBBackendTLS(t *testing.T) {
	ca := dbtest.NewCA(t)
	_, certPEM, keyPEM := ca.Issue(t, "127.0.0.1")
	m := startMariaDBBackend(t, testenv.MariaDBOptions{CertPEM: certPEM, KeyPEM: keyPEM,
		Args: []string{"--require-secure-transport=ON"}})
	p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{
		{Host: "secure.test", Backend: m.Addr, TLS: dbproxy.TLSVerify, RootCAs: ca.Pool},
		{Host: "plain.test", Backend: m.Addr},
	}})
	for _, user := range []struct{ name, password string }{{"nat", "natpw"}, {"ed", "edpw"}} {
		db := openDB(t, p.Addr, ca.ClientConfig("secure.test", "secure.test"), user.name, user.password, nil)
		if got := queryString(t, db, "SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'SSL_VERSION'"); !strings.HasPrefix(got, "TLSv1.") {
			t.Errorf("%s: backend session TLS version %q, want TLSv1.x", user.name, got)
		}
		if got := queryString(t, db, "SELECT CURRENT_USER()"); got != user.name+"@%" {
			t.Errorf("CURRENT_USER() = %q, want %s@%%", got, user.name)
		}
	}
	// The plain route meets the backend's own refusal (MariaDB words a
	// violation of require_secure_transport as a denied access).
	err := pingErr(openDB(t, p.Addr, ca.ClientConfig("plain.test", "plain.test"), "nat", "natpw", nil))
	if err == nil {
		t.Fatal("plaintext login to a require_secure_transport backend succeeded")
	}
	if me := serverError(t, err); me.Number != 1045 || me.Message != "Access denied for user 'nat'@'127.0.0.1' (using password: YES)" {
		t.Errorf("got error %d %q, want the backend's 1045", me.Number, me.Message)
	}
}

// writeCAFile writes the CA certificate for clients that read it from a
// file.
func writeCAFile(t testing.TB, ca *dbtest.CA) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(f, ca.PEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}
