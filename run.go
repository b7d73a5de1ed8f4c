package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/leproxy/leproxy/internal/admin"
	"github.com/leproxy/leproxy/internal/backup"
	"github.com/leproxy/leproxy/internal/certs"
	"github.com/leproxy/leproxy/internal/clientlimit"
	"github.com/leproxy/leproxy/internal/config"
	"github.com/leproxy/leproxy/internal/demo"
	"github.com/leproxy/leproxy/internal/etcdstore"
	"github.com/leproxy/leproxy/internal/httpproxy"
	"github.com/leproxy/leproxy/internal/logging"
	"github.com/leproxy/leproxy/internal/sdnotify"
	"github.com/leproxy/leproxy/internal/tlspolicy"
)

const (
	// readHeaderTimeout bounds how long a client may take to send request
	// headers, whatever -rto says: the slowloris guard.
	readHeaderTimeout = 10 * time.Second
)

// run is the whole program: it parses args, starts every listener and
// serves until ctx is done, then drains. A clean stop returns nil.
func run(ctx context.Context, args []string) error {
	return runIO(ctx, args, os.Stdout, os.Stderr)
}

func runIO(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runEnv{stdout: stdout, stderr: stderr}.run(ctx, args)
}

// runEnv is where run writes, and what it tells a caller that waits for it.
type runEnv struct {
	stdout, stderr io.Writer
	// ready, if set, is called once every listener serves and the start-up
	// lines are logged: the moment a test may talk to the daemon.
	ready func()
}

func (env runEnv) run(ctx context.Context, args []string) error {
	if install, ok := subcommand(args); ok {
		return env.trust(ctx, install, args[1:])
	}
	stdout, stderr := env.stdout, env.stderr
	a, set, err := parseArgs(args, stdout, stderr)
	if err != nil {
		return err
	}
	if a.Version {
		fmt.Fprintln(stdout, "leproxy", version())
		return nil
	}
	logger, err := logging.New(stderr, a.LogFormat, a.LogLevel)
	if err != nil {
		return err
	}
	for _, name := range a.secretsOnCommandLine {
		logger.Warn("secret given on the command line, where every local user can read it in /proc", "flag", "-"+name, "instead", "-"+name+"-file, or its environment variable or systemd credential")
	}
	if a.Cache == "" {
		if a.Cache, err = defaultCacheDir(); err != nil {
			return err
		}
	}

	var store *etcdstore.Store // fleet mode
	if a.Store != "" {
		if store, err = openFleetStore(a, logger); err != nil {
			return err
		}
		defer store.Close()
	}
	if a.MapPut != "" {
		return mapPut(ctx, store, a.MapPut, stdout)
	}
	if a.Backup != "" || a.Restore != "" {
		if store != nil {
			return fleetBackupOrRestore(ctx, a, store, stdout, logger)
		}
		return backupOrRestore(a, stdout, logger)
	}
	if a.Probe != "" {
		return probe(ctx, a.Probe, stdout)
	}

	if a.H3Port < 0 || a.H3Port > 65535 {
		return fmt.Errorf("-h3-port: %d is not a port number", a.H3Port)
	}

	// Reload signals are taken before anything listens, so that a HUP
	// never kills a running leproxy.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var lv *live
	var demoBackend *demoServer
	var cfg *config.Config
	var fleetRev int64 // the fleet mapping's revision, to watch from
	mapName := a.Map   // where the mapping comes from, for logs
	if a.Map == "" && store != nil {
		if cfg, fleetRev, err = fleetMapping(ctx, store, a.Cache); err != nil {
			return err
		}
		mapName = fleetMappingName(store)
	} else if a.Map == "" {
		if !set["addr"] {
			a.Addr = ":8443"
		}
		if !set["http"] {
			a.HTTP = ":8080"
		}
		if a.Check {
			return errors.New("-check needs -map")
		}
		demoBackend, cfg, err = startDemo(a.Cache)
		if err != nil {
			return err
		}
		defer demoBackend.close()
	} else {
		if cfg, err = config.Load(a.Map); err != nil {
			return err
		}
	}
	if a.Check {
		cfg.Summary(stdout)
		fmt.Fprintf(stdout, "%s: OK\n", cfg.File)
		return nil
	}

	issuers, local, err := certs.ParseIssuers(certs.IssuerFlags{ACME: a.ACME, EAB: a.ACMEEAB, Profile: a.ACMEProfile})
	if err != nil {
		return err
	}
	var acmeRoots *x509.CertPool
	if a.ACMECA != "" {
		if acmeRoots, err = loadCertPool(a.ACMECA); err != nil {
			return fmt.Errorf("-acme-ca: %w", err)
		}
	}
	var metrics *admin.Metrics // nil, a no-op, without -admin
	if a.Admin != "" {
		metrics = admin.NewMetrics()
		b := buildInfo() // the stamped release, else the toolchain's record
		metrics.SetBuildInfo(admin.BuildInfo{Version: b.Version, Commit: b.Commit, GoVersion: b.GoVersion})
	}
	// Before any listener's TLS configuration is made.
	tlspolicy.SetSessionTickets(a.TLSSessionTickets)
	var storage certs.Storage // nil: the cache directory
	if store != nil {
		storage = store
	}
	cm, err := certs.New(certs.Config{
		Storage:     storage,
		OnACMEOrder: metrics.ACMEOrder,
		OnACMEEvent: metrics.ACMEEvent,
		CacheDir:    a.Cache,
		Issuers:     issuers,
		Local:       local,
		Email:       a.Email,
		EABKeyID:    a.EABKeyID,
		EABHMAC:     a.EABHMAC,
		RootCAs:     acmeRoots,
		Logger:      logger,
	})
	if err != nil {
		return fmt.Errorf("certificate manager: %w", err)
	}
	defer cm.Close()
	rules, err := challengeRules(cfg)
	if err == nil {
		err = cm.SetChallenges(rules)
	}
	if err != nil {
		return err
	}
	cm.SetHosts(cfg.Hostnames())
	for _, name := range cfg.Hostnames() {
		if cm.UsesLocalCA(name) {
			if _, err := cm.EnsureLocalCA(); err != nil {
				return fmt.Errorf("local CA: %w", err)
			}
			break
		}
	}

	// The first generation: the same builder a reload uses. It binds the
	// tcp listeners; every other address is bound before anything serves,
	// so that a port in use is a start-up error and not a half-started
	// daemon.
	tp, err := startTracing(ctx, a.Otel, logger)
	if err != nil {
		return err
	}
	defer stopTracing(tp, logger) // after the drain: the drained requests' spans go too
	proxyOpts := httpproxy.Options{Tracer: tp.Tracer(), HSTS: a.HSTS, AllowMisdirected: a.AllowMisdirected, Logger: logger, OnBackendError: metrics.BackendError, MaxHeaders: a.MaxHeaders, MaxURI: a.MaxURI, KeepUnderscoreHeaders: a.KeepUnderscoreHeaders}
	clients := clientlimit.New(policyOf(cfg.Limits), clientlimit.Options{
		Blocks:    clientlimit.NewBlocklist(clientlimit.BlocklistOptions{Logger: logger, OnBlock: metrics.ClientBlocked}),
		OnLimited: func(kind string) { metrics.ClientLimited("connection", kind) },
	})
	proxyOpts.Clients = clients
	proxyOpts.OnLimited = func(_, kind string) { metrics.ClientLimited("request", kind) }
	unknownNames := newUnknownNames() // shared by the HTTPS and tcp listeners
	deps := tcpDeps{getCertificate: cm.GetCertificate, metrics: metrics, logger: logger, clients: clients, unknownNames: unknownNames, observer: tp.SessionObserver()}
	gen, err := prepare(cfg, nil, proxyOpts, deps)
	if err != nil {
		return err
	}
	committed := false
	defer func() {
		if !committed {
			gen.abort()
		}
	}()
	var ls listeners
	defer func() { ls.closeAll() }() // the listeners bound by then, not none
	httpsLn, err := ls.listen("-addr", a.Addr)
	if err != nil {
		return err
	}
	var httpLn net.Listener
	if a.HTTP != "" {
		if httpLn, err = ls.listen("-http", a.HTTP); err != nil {
			return err
		}
	}
	var h3Conn *net.UDPConn
	if h3Wanted(a, set) {
		if h3Conn, err = listenH3(a.Addr, httpsLn); err != nil {
			return err
		}
		defer h3Conn.Close() // until its server owns it
	}
	var adminLn net.Listener
	if a.Admin != "" {
		admin.WarnIfPublic(a.Admin, logger)
		if adminLn, err = ls.listen("-admin", a.Admin); err != nil {
			return err
		}
	}

	var debugLn net.Listener
	if a.DebugAddr != "" {
		admin.WarnIfDebugPublic(a.DebugAddr, logger)
		if debugLn, err = ls.listen("-debug-addr", a.DebugAddr); err != nil {
			return err
		}
	}

	g := newGroup(cancel)
	lv = &live{mapFile: a.Map, opts: proxyOpts, deps: deps, cm: cm, logger: logger, g: g, stopCtx: ctx, drainTimeout: drainTimeout}
	fleetMapped := a.Map == "" && store != nil
	if fleetMapped {
		lv.load = fleetLoader(ctx, store, a.Cache)
	}
	var fleetMap fleetMappingState
	lv.commit(gen) // the tcp listeners serve from here
	committed = true
	defer func() { lv.handler.Load().Close() }()
	httpsSrv := &http.Server{
		Handler:           metrics.InstrumentHTTP(lv, httpInstrumentation(lv, logger, a.AccessLog, clients)),
		ConnContext:       httpproxy.ConnContext,
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: httpproxy.MaxConcurrentStreams},
		TLSConfig:         cm.TLSConfig("h2", "http/1.1"),
		ReadHeaderTimeout: readHeaderTimeout,
		MaxHeaderBytes:    a.MaxHeaderBytes,
		ReadTimeout:       a.ReadTimeout,
		WriteTimeout:      a.WriteTimeout,
		IdleTimeout:       a.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
	httpsSrv.TLSConfig.GetCertificate = logUnknownNames(httpsSrv.TLSConfig.GetCertificate, "https", unknownNames, logger)
	// The listener does the handshakes (net/http's ServeTLS would), so that
	// HTTP/1.x connections read through the framing scanner.
	httpsTLSLn := httpproxy.NewTLSListener(httpsLn, httpproxy.TLSListenerOptions{
		Config:           httpsSrv.TLSConfig,
		HandshakeTimeout: readHeaderTimeout,
		MaxHeaderBytes:   a.MaxHeaderBytes,
		OnHandshake:      func(err error) { metrics.TLSHandshake("https", err) },
		Logger:           logger,
		Guard: func() httpproxy.ConnGuard {
			if g := lv.httpsGuard.Load(); g != nil {
				return clientlimit.NetGuard{Guard: g}
			}
			return nil
		},
	})
	var h3Srv *httpproxy.H3Server
	if h3Conn != nil {
		if h3Srv, err = newH3Server(h3Conn, a, cm, lv, metrics, logger); err != nil {
			return err
		}
		httpsSrv.Handler = httpproxy.AltSvc(httpsSrv.Handler, altSvcPort(a, h3Conn))
		g.goServe("h3", h3Srv.Serve)
	}
	g.goServe("https", func() error { return httpsSrv.Serve(httpsTLSLn) })
	var httpSrv *http.Server
	if httpLn != nil {
		httpSrv = &http.Server{
			Handler:           cm.HTTPHandler(httpproxy.Redirect(lv.Known, portOf(httpsLn.Addr()))),
			ReadHeaderTimeout: readHeaderTimeout,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       a.IdleTimeout,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
		}
		g.goServe("http", func() error { return httpSrv.Serve(httpLn) })
	}
	if demoBackend != nil {
		g.goServe("demo backend", demoBackend.serve)
	}
	var serving atomic.Bool
	var adminSrv *http.Server
	if adminLn != nil {
		metrics.SetCertStatus(cm.Status)
		metrics.SetTCPStats(lv.tcpStats)
		var fleet func() *admin.FleetStatus
		if store != nil {
			fleet = fleetStatus(store)
			metrics.SetFleetStatus(fleet)
		}
		adminSrv = &http.Server{
			Handler: admin.NewHandler(admin.HandlerOptions{
				Metrics:      metrics,
				Blocks:       clients.Blocks(),
				Certificates: cm.Status,
				Fleet:        fleet,
				Logger:       logger,
				Ready: func() []admin.Problem {
					var p []admin.Problem
					if !serving.Load() {
						p = append(p, admin.Problem{What: "listener", Detail: "listeners not serving yet"})
					}
					p = append(p, fleetMap.problems()...)
					return append(p, admin.CertReadiness(cm.Status(), time.Now(), admin.DefaultMinValidity, a.ReadyStrict)...)
				},
			}),
			ReadHeaderTimeout: readHeaderTimeout,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       time.Minute,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
		}
		g.goServe("admin", func() error { return adminSrv.Serve(adminLn) })
		logger.Info("listening", "protocol", "admin", "listen", adminLn.Addr().String())
	}
	var debugSrv *http.Server
	if debugLn != nil {
		debugSrv = &http.Server{
			Handler:           admin.DebugHandler(),
			ReadHeaderTimeout: readHeaderTimeout,
			IdleTimeout:       time.Minute, // no write timeout: a CPU profile or trace streams for its ?seconds=
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
		}
		g.goServe("debug", func() error { return debugSrv.Serve(debugLn) })
		logger.Info("listening", "protocol", "debug", "listen", debugLn.Addr().String())
	}
	serving.Store(true)
	// Get every certificate now rather than at the first client, so that
	// the first client doesn't wait and /health/ready tells the truth.
	g.goServe("certificate prefetch", func() error { cm.Prefetch(ctx, cfg.Hostnames()); return nil })

	_, tcpServers := lv.current()
	logStart(logger, cfg, cm, httpsLn, httpLn, tcpServers, a.Map == "")
	if h3Srv != nil {
		logger.Info("listening", "protocol", "h3", "listen", h3Srv.Addr().String())
	}
	notifier := sdnotify.New()
	if err := notifier.Ready(); err != nil {
		logger.Warn("notifying systemd", "error", err)
	}
	if env.ready != nil {
		env.ready()
	}
	reloads := make(chan struct{}, 1)
	if a.Watch && a.Map != "" {
		g.goServe("mapping watcher", func() error {
			watchFile(ctx, a.Map, time.Second, func() {
				select {
				case reloads <- struct{}{}:
				default:
				}
			})
			return nil
		})
	}
	if fleetMapped {
		// A change of the fleet's mapping is a reload on every node.
		g.goServe("fleet mapping watcher", func() error {
			store.WatchMapping(ctx, fleetRev, func([]byte, int64) {
				select {
				case reloads <- struct{}{}:
				default:
				}
			})
			return nil
		})
	}
serve:
	for {
		select {
		case <-ctx.Done():
			break serve
		case <-hup:
		case <-reloads:
		}
		err := reload(lv, mapName, notifier, logger)
		if fleetMapped && !errors.As(err, new(*storeReadError)) {
			fleetMap.set(err) // an invalid mapping shows on /health/ready; etcd down does not
		}
		if err == nil {
			metrics.Reload(true)
			newCfg, _ := lv.current()
			g.goServe("certificate prefetch", func() error { cm.Prefetch(ctx, newCfg.Hostnames()); return nil })
		} else {
			metrics.Reload(false)
		}
	}
	logger.Info("stopping", "drain_timeout", drainTimeout)
	if err := notifier.Stopping(); err != nil {
		logger.Warn("notifying systemd", "error", err)
	}

	drainCtx, drainCancel := context.WithTimeout(context.Background(), drainTimeout)
	defer drainCancel()
	shutdown := []func(context.Context) error{httpsSrv.Shutdown}
	if h3Srv != nil {
		shutdown = append(shutdown, h3Srv.Shutdown)
	}
	if httpSrv != nil {
		shutdown = append(shutdown, httpSrv.Shutdown)
	}
	_, tcpServers = lv.current()
	for _, ts := range tcpServers {
		shutdown = append(shutdown, ts.srv.Shutdown)
	}
	if demoBackend != nil {
		shutdown = append(shutdown, demoBackend.srv.Shutdown)
	}
	if adminSrv != nil {
		shutdown = append(shutdown, adminSrv.Shutdown)
	}
	if debugSrv != nil {
		shutdown = append(shutdown, func(context.Context) error { return debugSrv.Close() }) // a profile in progress is not worth waiting for
	}
	var errs []error
	for _, err := range parallel(drainCtx, shutdown) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		logger.Warn("drain incomplete", "error", errors.Join(errs...))
	}
	lv.draining.Wait()
	if err := g.wait(); err != nil {
		return err
	}
	logger.Info("stopped")
	return nil
}

// httpInstrumentation is how the HTTPS handler is instrumented: lv's
// hosts, the access log when on, and the trusted proxies of the mapping
// (which a reload updates in clients) for request ids.
func httpInstrumentation(lv *live, logger *slog.Logger, accessLog bool, clients *clientlimit.Clients) admin.HTTPOptions {
	opts := admin.HTTPOptions{Known: lv.Known, BackendOf: lv.backendOf, TrustedPeer: clients.Trusted}
	if accessLog {
		opts.AccessLog = logger
	}
	return opts
}

// reload switches lv to the mapping's current content (the file, or the
// fleet's mapping in the store), telling systemd and the log how it went.
func reload(lv *live, mapFile string, notifier *sdnotify.Notifier, logger *slog.Logger) error {
	if err := notifier.Reloading(); err != nil {
		logger.Warn("notifying systemd", "error", err)
	}
	var err error
	if mapFile == "" && lv.load == nil {
		err = errNoMapFile
	} else {
		err = lv.reload()
	}
	if err != nil {
		logger.Error("reload failed: still serving the previous mapping", "error", err)
		notifier.Status("reload failed: " + err.Error())
	} else {
		cfg, tcp := lv.current()
		logger.Info("mapping reloaded", "file", mapFile, "hosts", len(cfg.Hosts), "tcp_listeners", len(tcp))
		notifier.Status(fmt.Sprintf("serving %d hosts, %d tcp listeners", len(cfg.Hosts), len(tcp)))
	}
	if nerr := notifier.Ready(); nerr != nil {
		logger.Warn("notifying systemd", "error", nerr)
	}
	return err
}

// probe is -probe: one GET with a short timeout, success only on 200.
func probe(ctx context.Context, url string, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("-probe: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("-probe: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("-probe: %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	fmt.Fprintf(stdout, "%s: %s\n", url, resp.Status)
	return nil
}

// backupOrRestore runs -backup or -restore on the cache directory.
func backupOrRestore(a runArgs, stdout io.Writer, logger *slog.Logger) error {
	if a.Backup != "" && a.Restore != "" {
		return errors.New("-backup and -restore cannot be used together")
	}
	key, err := backupKey(a)
	if err != nil {
		return err
	}
	switch {
	case a.Backup == "-":
		err = backup.Write(stdout, a.Cache, key)
	case a.Backup != "":
		err = backup.WriteFile(a.Backup, a.Cache, key)
	case a.Restore == "-":
		err = backup.Restore(os.Stdin, a.Cache, key)
	default:
		err = backup.RestoreFile(a.Restore, a.Cache, key)
	}
	if err != nil {
		return err
	}
	if a.Backup != "" {
		logger.Info("cache backed up", "cache", a.Cache, "file", a.Backup)
	} else {
		logger.Info("cache restored", "cache", a.Cache, "file", a.Restore)
	}
	return nil
}

// backupKey is the key of -backup or -restore: the recipients or the
// identity file when given, else the passphrase.
func backupKey(a runArgs) (*backup.Key, error) {
	switch {
	case a.Backup != "" && a.RestoreIdentity != "":
		return nil, errors.New("-restore-identity opens backups; -backup takes -backup-recipient (the identity's public key)")
	case a.Restore != "" && a.BackupRecipient != "":
		return nil, errors.New("-backup-recipient only writes backups; -restore takes -restore-identity")
	case a.BackupRecipient != "":
		k, err := backup.Recipients(strings.Split(a.BackupRecipient, ",")...)
		if err != nil {
			return nil, fmt.Errorf("-backup-recipient: %w", err)
		}
		return k, nil
	case a.RestoreIdentity != "":
		f, err := os.Open(a.RestoreIdentity)
		if err != nil {
			return nil, fmt.Errorf("-restore-identity: %w", err)
		}
		defer f.Close()
		k, err := backup.Identities(f)
		if err != nil {
			return nil, fmt.Errorf("-restore-identity %s: %w", a.RestoreIdentity, err)
		}
		return k, nil
	case a.BackupPassphrase == "":
		return nil, fmt.Errorf("%w: set $LEPROXY_BACKUP_PASSPHRASE, -backup-passphrase-file or the systemd credential backup-passphrase (or use -backup-recipient and -restore-identity)", backup.ErrNoPassphrase)
	}
	return backup.Passphrase([]byte(a.BackupPassphrase)), nil
}

func defaultCacheDir() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("-cache not given and no user cache directory: %w", err)
	}
	return filepath.Join(dir, "leproxy"), nil
}

func loadCertPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no PEM certificates found", file)
	}
	return pool, nil
}

func portOf(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return fmt.Sprint(ta.Port)
	}
	_, port, _ := net.SplitHostPort(a.String())
	return port
}

// listeners owns every bound listener until the servers take them over.
type listeners []net.Listener

func (ls *listeners) listen(what, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	*ls = append(*ls, ln)
	return ln, nil
}

func (ls listeners) closeAll() {
	for _, ln := range ls {
		ln.Close()
	}
}

func logStart(logger *slog.Logger, cfg *config.Config, cm *certs.Manager, httpsLn, httpLn net.Listener, tcp []*tcpServer, demoMode bool) {
	if demoMode {
		logger.Info("no -map given: serving the embedded demo", "url", "https://www.localhost"+portSuffix(httpsLn.Addr()))
	}
	if p := cm.LocalRootPath(); p != "" && fileExists(p) {
		logger.Info("local CA root certificate (trust it to use .localhost names)", "file", p)
	}
	logger.Info("listening", "protocol", "https", "listen", httpsLn.Addr().String())
	if httpLn != nil {
		logger.Info("listening", "protocol", "http", "listen", httpLn.Addr().String())
	}
	for _, h := range cfg.Hosts {
		logger.Info("host", "host", h.Name, "backend", h.Backend.Raw)
	}
	for _, ts := range tcp {
		logger.Info("listening", "protocol", ts.protocol, "listen", ts.ln.Addr().String(), "routes", strings.Join(ts.routes, ","))
	}
}

func fileExists(name string) bool {
	_, err := os.Stat(name)
	return err == nil
}

func portSuffix(a net.Addr) string {
	if p := portOf(a); p != "443" {
		return ":" + p
	}
	return ""
}

// startDemo writes the demo site into the cache directory, starts the demo
// backend on a loopback port and returns the demo mapping.
func startDemo(cacheDir string) (*demoServer, *config.Config, error) {
	siteDir := filepath.Join(cacheDir, "demo", "www")
	if err := demo.WriteSite(siteDir); err != nil {
		return nil, nil, fmt.Errorf("writing demo site: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, fmt.Errorf("demo backend: %w", err)
	}
	cfg, err := config.Parse("embedded demo mapping", demo.Mapping(siteDir+"/", ln.Addr().String()))
	if err != nil {
		ln.Close()
		return nil, nil, err
	}
	d := &demoServer{ln: ln, srv: &http.Server{Handler: demo.Backend(), ReadHeaderTimeout: readHeaderTimeout}}
	return d, cfg, nil
}

type demoServer struct {
	ln  net.Listener
	srv *http.Server
}

func (d *demoServer) serve() error { return d.srv.Serve(d.ln) }
func (d *demoServer) close()       { d.srv.Close() }
