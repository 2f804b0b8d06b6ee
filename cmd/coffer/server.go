package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/httpapi"
	"github.com/cofferhq/coffer/internal/server/agents"
	"github.com/cofferhq/coffer/internal/server/auth"
	"github.com/cofferhq/coffer/internal/server/backups"
	"github.com/cofferhq/coffer/internal/server/events"
	"github.com/cofferhq/coffer/internal/server/plans"
	"github.com/cofferhq/coffer/internal/server/restores"
	"github.com/cofferhq/coffer/internal/server/scheduler"
	"github.com/cofferhq/coffer/internal/server/storage"
	"golang.org/x/sync/errgroup"
)

// serverCmd holds the settings the server and its maintenance commands
// share: where the state lives. Serving is the default subcommand, so
// `coffer server --listen …` runs the server as it always has.
type serverCmd struct {
	DataDir       string `help:"Directory for everything the server keeps: the SQLite database, the master key and the default local repository." default:"./coffer-data" env:"COFFER_DATA_DIR" type:"path"`
	DatabaseURL   string `help:"Metadata database: sqlite:///path/to/file.db or postgres://user:pass@host:5432/db (default: SQLite in the data directory)." env:"COFFER_DATABASE_URL" placeholder:"URL"`
	MasterKeyFile string `help:"File holding the master key that wraps every repository's keys, created on the first start (default: master.key in the data directory). Back it up apart from the repositories: losing it loses every encrypted repository." env:"COFFER_MASTER_KEY_FILE" type:"path" placeholder:"FILE"`
	RepositoryDir string `help:"Directory of the default local repository, created on the first start (default: repository in the data directory)." env:"COFFER_REPOSITORY_DIR" type:"path" placeholder:"DIR"`
	RepositoryURL string `help:"Keep the default repository in S3-compatible storage instead: s3://HOST[:PORT]/BUCKET[/PREFIX]?region=R&tls=false. The bucket must exist; credentials come from COFFER_S3_ACCESS_KEY and COFFER_S3_SECRET_KEY." env:"COFFER_REPOSITORY_URL" placeholder:"URL"`

	Serve        serveCmd        `cmd:"" default:"withargs" help:"Serve the API and the event stream (the default: 'coffer server' alone does this)."`
	RebuildIndex rebuildIndexCmd `cmd:"" help:"Rebuild the default repository's index in the database from the repository alone (after losing the database)."`
}

type serveCmd struct {
	Listen             string        `help:"Address to serve HTTP on (host:port)." default:"127.0.0.1:8080" env:"COFFER_LISTEN"`
	AdminUser          string        `help:"Username of the admin account created on the very first start." default:"admin" env:"COFFER_ADMIN_USER"`
	AdminPassword      string        `help:"Password of that first admin account; when empty one is generated and printed once. Ignored once accounts exist." env:"COFFER_ADMIN_PASSWORD"`
	TLSCert            string        `help:"TLS certificate (PEM) to serve HTTPS; needs --tls-key." env:"COFFER_TLS_CERT" type:"existingfile" placeholder:"FILE"`
	TLSKey             string        `help:"TLS private key (PEM) for --tls-cert." env:"COFFER_TLS_KEY" type:"existingfile" placeholder:"FILE"`
	TrustedProxy       []string      `help:"Reverse proxy addresses or CIDR ranges whose X-Forwarded-For/-Proto headers are believed (repeatable; comma-separated in the variable)." env:"COFFER_TRUSTED_PROXIES" placeholder:"CIDR"`
	SessionTTL         time.Duration `help:"How long a login lasts." default:"12h" env:"COFFER_SESSION_TTL"`
	EventRetention     time.Duration `help:"How long events are kept in the history (0 keeps them forever)." default:"2160h" env:"COFFER_EVENT_RETENTION"`
	MaxBodySize        int64         `help:"Largest accepted JSON request body, in bytes." default:"1048576" env:"COFFER_MAX_BODY_SIZE"`
	ShutdownTimeout    time.Duration `help:"How long in-flight requests may take to finish on SIGINT/SIGTERM." default:"30s" env:"COFFER_SHUTDOWN_TIMEOUT"`
	Scheduler          time.Duration `name:"scheduler-interval" help:"How often the scheduler looks for due plans (a cheap query; with several replicas each looks this often)." default:"1s" env:"COFFER_SCHEDULER_INTERVAL"`
	ClientLogRetention time.Duration `help:"How long the log lines agents ship are kept (0 keeps them forever)." default:"720h" env:"COFFER_CLIENT_LOG_RETENTION"`
	ClientLogMaxLines  int           `help:"Most log lines kept per client, its newest (0: no limit)." default:"100000" env:"COFFER_CLIENT_LOG_MAX_LINES"`
	GCInterval         time.Duration `help:"How often every repository is garbage-collected (0 turns the automatic collection off)." default:"24h" env:"COFFER_GC_INTERVAL"`
}

func (c *serveCmd) Run(g *globals, sc *serverCmd) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("--tls-cert and --tls-key go together: give both or neither")
	}
	proxies, err := parsePrefixes(c.TrustedProxy)
	if err != nil {
		return err
	}
	loc, err := sc.locate()
	if err != nil {
		return err
	}

	log := g.logger
	db, err := openDatabase(ctx, loc, log)
	if err != nil {
		return err
	}
	defer db.Close()
	repo, masterKey, err := openDefaultRepository(ctx, loc, db, log)
	if err != nil {
		return err
	}
	defLoc, err := defaultLocation(loc)
	if err != nil {
		closeRepository(repo)
		return err
	}

	// Background work (event tailing, maintenance) outlives the signal
	// context: it stops only after in-flight requests have finished.
	runCtx, cancelRun := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRun()
	notes, err := db.ListenEvents(runCtx, log.With("component", "events"))
	if err != nil {
		return err
	}
	hub := events.New(events.Options{Store: db, Logger: log.With("component", "events"), Retention: c.EventRetention,
		Notifications: notes})
	// Storage owns the open repositories: the default one, and the others
	// opened from their records on first use.
	storageSvc, err := storage.New(storage.Options{Store: db, Default: repo, MasterKey: masterKey,
		Index: func(id string) repository.Index { return db.Index(id) }, Events: hub, Logger: log.With("component", "storage"),
		GCInterval: c.GCInterval})
	if err != nil {
		closeRepository(repo)
		return err
	}
	repoSet := storageSvc.Repos()
	defer repoSet.Close()
	defer storageSvc.Close() // its jobs end before the repositories close
	if _, err := storageSvc.EnsureDefault(ctx, defLoc); err != nil {
		return fmt.Errorf("record the default repository: %w", err)
	}
	authSvc := auth.New(auth.Options{Store: db, Events: hub, Logger: log.With("component", "auth"), SessionTTL: c.SessionTTL})
	agentSvc := agents.New(agents.Options{Store: db, Events: hub, Logger: log.With("component", "agents"),
		LogRetention: c.ClientLogRetention, LogMaxLines: c.ClientLogMaxLines})
	backupSvc := backups.New(backups.Options{Store: db, Repos: repoSet, Events: hub, Commands: agentSvc, Clients: agentSvc,
		Plans: db, Quota: storageSvc, Logger: log.With("component", "backups")})
	restoreSvc := restores.New(restores.Options{Store: db, Repos: repoSet, Events: hub, Commands: agentSvc, Clients: agentSvc,
		Logger: log.With("component", "restores")})
	planSvc := plans.New(plans.Options{Store: db, Clients: agentSvc, Backups: backupSvc, Events: hub,
		Logger: log.With("component", "plans"), DefaultRepositoryID: repoSet.DefaultID(), Repositories: storageSvc})
	// Every replica runs a scheduler: they claim due plans in the database,
	// so each fire happens once.
	sched := scheduler.New(scheduler.Options{Store: db, Backups: backupSvc, Events: hub, Logger: log.With("component", "scheduler")})

	created, generated, err := authSvc.Bootstrap(ctx, c.AdminUser, c.AdminPassword)
	if err != nil {
		return fmt.Errorf("create the first admin account: %w", err)
	}

	version, commitID, _ := buildInfo()
	reg := newRegistry(version, commitID, db, hub)
	api, err := httpapi.New(httpapi.Options{
		Auth: authSvc, Events: hub, EventLog: db, Agents: agentSvc, Backups: backupSvc, Restores: restoreSvc, Plans: planSvc,
		Storage:   storageSvc,
		Readiness: readinessChecks(db, loc.dataDir, repo.Backend(), log), Components: componentChecks(db, loc.dataDir, repo.Backend(), hub, sched, log),
		Logger: log, Registry: reg, Gatherer: reg, Version: version, Commit: commitID, PlanFirings: db,
		MaxBodyBytes: c.MaxBodySize, TrustedProxies: proxies,
	})
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", c.Listen, err)
	}
	srv := &http.Server{
		Handler:           api.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       2 * time.Minute,
		WriteTimeout:      2 * time.Minute, // SSE streams extend their own deadline per write
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	scheme := "http"
	if c.TLSCert != "" {
		scheme = "https"
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	baseURL := fmt.Sprintf("%s://%s", scheme, displayAddr(ln.Addr()))
	log.Info("coffer server started", "addr", ln.Addr().String(), "url", baseURL, "version", version,
		"database", string(db.Dialect()), "data_dir", loc.dataDir)
	printWelcome(g, baseURL, c.AdminUser, created, generated)

	var bg errgroup.Group
	bg.Go(func() error { return hub.Run(runCtx) })
	bg.Go(func() error { every(runCtx, 10*time.Minute, authSvc.Maintain); return nil })
	bg.Go(func() error {
		every(runCtx, time.Hour, func(ctx context.Context) { logFailure(log, "refresh the database's statistics", db.Optimize(ctx)) })
		return nil
	})
	bg.Go(func() error { return sched.Run(runCtx, c.Scheduler) })
	bg.Go(func() error { return backupSvc.RunRetention(runCtx) }) // after every plan backup, and daily
	bg.Go(func() error {
		every(runCtx, agentSvc.HeartbeatInterval(), func(ctx context.Context) {
			logFailure(log, "agents maintenance", agentSvc.Maintain(ctx))
			logFailure(log, "backups maintenance", backupSvc.Maintain(ctx))
			logFailure(log, "restores maintenance", restoreSvc.Maintain(ctx))
			logFailure(log, "storage maintenance", storageSvc.Maintain(ctx))
		})
		return nil
	})
	if c.GCInterval > 0 {
		// Each repository is collected once an interval; checking more
		// often spreads the work and lets replicas share it.
		bg.Go(func() error { every(runCtx, min(c.GCInterval, time.Hour), storageSvc.CollectDue); return nil })
	}

	serveErr := make(chan error, 1)
	go func() {
		if c.TLSCert != "" {
			serveErr <- srv.ServeTLS(ln, c.TLSCert, c.TLSKey)
		} else {
			serveErr <- srv.Serve(ln)
		}
	}()

	select {
	case err := <-serveErr:
		cancelRun()
		return errors.Join(fmt.Errorf("serve: %w", err), bg.Wait())
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing in-flight requests", "timeout", c.ShutdownTimeout)
	hub.Close()      // ends the SSE streams so Shutdown need not wait for them
	agentSvc.Close() // and the agents' command streams: they reconnect when a server is back
	shutCtx, cancel := context.WithTimeout(context.Background(), c.ShutdownTimeout)
	defer cancel()
	err = srv.Shutdown(shutCtx)
	cancelRun()
	if bgErr := bg.Wait(); bgErr != nil {
		err = errors.Join(err, bgErr)
	}
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("coffer server stopped")
	return nil
}

// printWelcome tells the person who started the server where to go. The
// generated admin password is printed here, once, on stdout — never logged.
func printWelcome(g *globals, baseURL, admin string, created bool, generated string) {
	w := g.stdout
	fmt.Fprintf(w, "\nCoffer is running at %s\n", baseURL)
	if created && generated != "" {
		fmt.Fprintf(w, "\n  First start: created the admin account.\n    username: %s\n    password: %s\n  This password is shown only now; change it with PUT /api/v1/users/{id}/password.\n", admin, generated)
	} else if created {
		fmt.Fprintf(w, "\n  First start: created the admin account %q with the password you gave.\n", admin)
	}
	fmt.Fprintf(w, "\n  Web UI:  %s/\n", baseURL)
	fmt.Fprintf(w, "\n  Log in:  curl -s -X POST %s/api/v1/auth/login -H 'Content-Type: application/json' \\\n", baseURL)
	fmt.Fprintf(w, "             -d '{\"username\":\"%s\",\"password\":\"…\"}'\n  API:     %s/api/v1/openapi.json\n\n", admin, baseURL)
}

// displayAddr turns a wildcard listen address into one a browser can use.
func displayAddr(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}

func parsePrefixes(in []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range in {
		for _, part := range strings.Split(s, ",") {
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			if !strings.Contains(part, "/") {
				a, err := netip.ParseAddr(part)
				if err != nil {
					return nil, fmt.Errorf("--trusted-proxy %q: not an address or CIDR range", part)
				}
				out = append(out, netip.PrefixFrom(a, a.BitLen()))
				continue
			}
			p, err := netip.ParsePrefix(part)
			if err != nil {
				return nil, fmt.Errorf("--trusted-proxy %q: not an address or CIDR range", part)
			}
			out = append(out, p.Masked())
		}
	}
	return out, nil
}

// every runs fn now and then at each interval until ctx ends.
func every(ctx context.Context, interval time.Duration, fn func(context.Context)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		fn(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// logFailure logs a background task's error, if any.
func logFailure(log *slog.Logger, what string, err error) {
	if err != nil {
		log.Warn(what+" failed", "err", err)
	}
}
