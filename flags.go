package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/artyom/autoflags"
	"github.com/leproxy/leproxy/internal/httpproxy"
)

// runArgs holds every command-line flag; the literal in defaultArgs holds
// the defaults.
type runArgs struct {
	Map      string `flag:"map,mapping file (YAML); empty runs the embedded demo on *.localhost names"`
	Cache    string `flag:"cache,directory for the ACME account, certificates and the local CA (created 0700); empty means $XDG_CACHE_HOME/leproxy"`
	Addr     string `flag:"addr,HTTPS address: serves the mapped hosts and ACME tls-alpn-01 (demo default :8443)"`
	HTTP     string `flag:"http,plain HTTP address for ACME http-01 and redirects to https; empty disables (demo default :8080)"`
	H3       bool   `flag:"h3,serve HTTP/3 (QUIC) on UDP at the -addr port and announce it with Alt-Svc; on by default when -addr has a fixed port (not :0); -h3=false turns it off"`
	H3Port   int    `flag:"h3-port,UDP port announced in Alt-Svc when clients reach HTTP/3 on another port than -addr's (a container publishing 443/udp to 8443); 0: -addr's port"`
	Email    string `flag:"email,contact address given to the ACME CA for expiry notices"`
	ACME     string `flag:"acme,ACME issuers in order of preference, comma-separated: directory URLs or letsencrypt, letsencrypt-staging, zerossl; or local (local CA only)"`
	ACMECA   string `flag:"acme-ca,PEM file of CA certificates to trust for the ACME server's own HTTPS (private CAs, Pebble)"`
	EABKeyID string `flag:"eab-kid,External Account Binding key ID (required by ZeroSSL)"`
	EABHMAC  string `flag:"eab-hmac,External Account Binding HMAC key, base64url" secret:"eab-hmac,LEPROXY_EAB_HMAC"`

	ACMEEAB     string `flag:"acme-eab,External Account Binding per issuer: ISSUER=FILE (FILE holds the key ID and the base64url HMAC key) or ISSUER=env:VAR, comma-separated"`
	ACMEProfile string `flag:"acme-profile,ACME profile to order with (such as shortlived): NAME for the first issuer, or ISSUER=NAME, comma-separated"`
	Watch       bool   `flag:"watch,reload the mapping when its file changes (SIGHUP always reloads)"`
	HSTS        bool   `flag:"hsts,add Strict-Transport-Security to every HTTPS response"`

	TLSSessionTickets bool `flag:"tls-session-tickets,resume TLS sessions by ticket on every listener (keys rotated every 12h, tickets accepted for 24h; off by default, as Go advertises 7-day tickets to TLS 1.3 clients)"`

	AllowMisdirected bool `flag:"allow-misdirected,serve an HTTPS request whose Host is another mapped host than the TLS server name (SNI) instead of answering 421, for HTTP/2 connection coalescing"`
	ReadyStrict      bool `flag:"ready-strict,make /health/ready fail when any mapped name lacks a valid certificate (by default only when every name does; the others are listed as warnings)"`

	MaxHeaderBytes        int  `flag:"max-header-bytes,most bytes of HTTPS request headers, request line included (HTTP/1.1: 431; HTTP/2: advertised as SETTINGS_MAX_HEADER_LIST_SIZE, 431)"`
	MaxHeaders            int  `flag:"max-headers,most HTTPS request header fields; more get 431"`
	MaxURI                int  `flag:"max-uri,longest HTTPS request URI in bytes; longer gets 414 (keep it below -max-header-bytes)"`
	KeepUnderscoreHeaders bool `flag:"keep-underscore-headers,pass request headers with an underscore in their names to backends (dropped by default)"`

	ReadTimeout  time.Duration `flag:"rto,maximum time to read a whole HTTP request, body included (0: no limit; headers always have 10s)"`
	WriteTimeout time.Duration `flag:"wto,maximum time to write an HTTP response (0: no limit, so streams and long downloads work)"`
	IdleTimeout  time.Duration `flag:"idle,how long an idle HTTP keep-alive connection is kept open"`

	Admin     string `flag:"admin,address for /health/live, /health/ready, /metrics and /certificates (empty: off; keep it on loopback)"`
	DebugAddr string `flag:"debug-addr,address serving Go's net/http/pprof profiles under /debug/pprof/ (empty: off; keep it on loopback)"`
	AccessLog bool   `flag:"access-log,log one line per HTTPS request"`
	Otel      bool   `flag:"otel,export OpenTelemetry traces over OTLP as the OTEL_* environment variables say (also on when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set)"`
	LogFormat string `flag:"log-format,log format: text or json"`
	LogLevel  string `flag:"log-level,log level: debug, info, warn or error"`
	Backup    string `flag:"backup,write the cache (ACME account, certificates, local CA) to this age-encrypted FILE and exit (- for stdout); passphrase from $LEPROXY_BACKUP_PASSPHRASE or -backup-passphrase-file, or see -backup-recipient"`
	Restore   string `flag:"restore,replace the cache with this encrypted backup FILE and exit (- for stdin); stop leproxy first; passphrase as for -backup, or see -restore-identity"`

	BackupPassphrase string `secret:"backup-passphrase,LEPROXY_BACKUP_PASSPHRASE,passphrase of -backup and -restore"`
	BackupRecipient  string `flag:"backup-recipient,encrypt -backup to these age public keys (age1..., comma-separated) instead of a passphrase"`
	RestoreIdentity  string `flag:"restore-identity,age identity FILE (from age-keygen) that opens a -restore backup made with -backup-recipient"`

	Store     string `flag:"store,fleet mode: keep certificates, locks, challenge answers and (without -map) the mapping in etcd, etcd://host1:2379,host2:2379/prefix; the -cache directory stays as a mirror"`
	StoreCA   string `flag:"store-ca,PEM file of CA certificates to trust for etcd's TLS (turns TLS on)"`
	StoreCert string `flag:"store-cert,PEM client certificate for etcd's TLS (with -store-key)"`
	StoreKey  string `flag:"store-key,PEM private key of -store-cert"`
	StoreUser string `flag:"store-user,etcd user name; the password comes from $LEPROXY_STORE_PASSWORD or -store-password-file"`

	StorePasswordFile string `flag:"store-password-file,file holding the etcd password of -store-user"`
	StoreNode         string `flag:"store-node,this node's name in the fleet's lock listings (default: the host name)"`
	MapPut            string `flag:"map-put,validate this mapping file, write it to the -store as the fleet's mapping and exit (refused when invalid)"`

	// secretsOnCommandLine names the secrets given as plain flags, for a
	// warning once the logger exists.
	secretsOnCommandLine []string
	Probe                string `flag:"probe,GET this URL (such as http://127.0.0.1:9090/health/ready) and exit 0 on 200, 1 otherwise: a health check for images without curl"`
	Check                bool   `flag:"check,validate the mapping, print a summary and exit (status 0 when valid, 1 when not)"`
	Version              bool   `flag:"version,print the version and exit"`
}

func defaultArgs() runArgs {
	return runArgs{
		Addr:        ":https",
		HTTP:        ":http",
		H3:          true,
		ACME:        "letsencrypt",
		IdleTimeout: 2 * time.Minute,

		MaxHeaderBytes: 64 << 10,
		MaxHeaders:     httpproxy.DefaultMaxHeaders,
		MaxURI:         httpproxy.DefaultMaxURI,
		AccessLog:      true,
		LogFormat:      "text",
		LogLevel:       "info",
	}
}

// parseArgs parses command-line arguments over the defaults. set reports
// which flags were given explicitly. As the flag package does for a
// program: -h (-help, --help) prints the usage to stdout and returns
// flag.ErrHelp; a bad flag or argument prints the error and the usage to
// stderr and returns a *usageError.
func parseArgs(args []string, stdout, stderr io.Writer) (a runArgs, set map[string]bool, err error) {
	a = defaultArgs()
	fs := flag.NewFlagSet("leproxy", flag.ContinueOnError)
	// Buffered: the flag package writes the error and the usage before
	// saying which of the two (help or a mistake) it was.
	var out bytes.Buffer
	fs.SetOutput(&out)
	autoflags.DefineFlagSet(fs, &a)
	secrets := defineSecretFlags(fs, &a)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageHeader)
		fs.PrintDefaults()
	}
	err = fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		stdout.Write(out.Bytes())
		return a, nil, err
	case err != nil:
		stderr.Write(out.Bytes())
		return a, nil, &usageError{err}
	case fs.NArg() > 0:
		err := fmt.Errorf("unexpected argument %q (flags only)", fs.Arg(0))
		fmt.Fprintln(stderr, err)
		fs.Usage()
		stderr.Write(out.Bytes())
		return a, nil, &usageError{err}
	}
	set = make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if a.secretsOnCommandLine, err = secrets.resolve(set, os.Getenv); err != nil {
		return a, nil, err
	}
	return a, set, nil
}

// usageError is a command line the flags do not accept. It has been
// printed with the usage already; the process exits with status 2, as
// the flag package's programs do.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

const usageHeader = `leproxy puts publicly trusted TLS in front of web apps and databases.

Usage:
  leproxy -map mapping.yml -cache /var/cache/leproxy [flags]
  leproxy                    (demo: local CA, *.localhost names, ports 8443 and 8080)
  leproxy -check -map mapping.yml
  leproxy trust | untrust [-cache DIR]   (the local CA root in the system and browser stores)

Flags:
`
