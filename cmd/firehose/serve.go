package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"firehose/bridge"
	"firehose/broker"
	"firehose/httpgw"
	"firehose/ingest"
	"firehose/internal/cli"
	"firehose/schema"
)

// Roles firehose serve can run.
const (
	roleBroker = "broker"
	roleHTTP   = "httpgw"
	roleBridge = "bridge"
)

// maxShutdownDelay bounds --shutdown-delay: longer than any readiness probe
// needs, short of hanging a deployment's rollout.
const maxShutdownDelay = 5 * time.Minute

var allRoles = []string{roleBroker, roleHTTP, roleBridge}

// serveConfig is everything firehose serve reads from flags and environment.
type serveConfig struct {
	Roles           string
	Postgres        string
	Redis           string
	Streams         ingest.Streams
	Limits          ingest.Limits
	Producer        ingest.ProducerConfig
	Bridge          bridge.Config
	HTTP            httpgw.Config
	MQTT            broker.Config
	AdminAddr       string
	DebugAddr       string
	LogLevel        string
	LogFormat       string
	ShutdownTimeout time.Duration
	ShutdownDelay   time.Duration
}

// registerCommon registers the connection and logging flags every command
// that talks to the services shares.
func (c *serveConfig) registerCommon(fs *flag.FlagSet) {
	fs.StringVar(&c.Postgres, "postgres", "postgres://localhost:5432/firehose", "PostgreSQL connection URL (libpq form; e.g. add ?sslmode=require)")
	fs.StringVar(&c.Redis, "redis", "redis://localhost:6379/0", "Redis connection URL (redis:// or rediss:// for TLS)")
	c.Streams.RegisterFlags(fs)
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "text", "log format: text or json")
}

func (c *serveConfig) registerFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Roles, "roles", strings.Join(allRoles, ","), "comma-separated roles to run in this process: "+strings.Join(allRoles, ", "))
	c.registerCommon(fs)
	c.Limits.RegisterFlags(fs)
	c.Producer.RegisterFlags(fs)
	c.Bridge.RegisterFlags(fs)
	c.HTTP.RegisterFlags(fs)
	c.MQTT.RegisterFlags(fs)
	fs.StringVar(&c.AdminAddr, "admin-addr", "", "address for /metrics, /livez and /readyz when the httpgw role does not run here\n(they are on --http-addr when it does)")
	fs.StringVar(&c.DebugAddr, "debug-addr", "", "address for Go's /debug/pprof profiles (off when empty; bind it to loopback)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 15*time.Second, "on SIGTERM, the longest to wait for in-flight requests and the final commit")
	fs.DurationVar(&c.ShutdownDelay, "shutdown-delay", 0, "on SIGTERM, keep serving this long with the gateway's /readyz answering 503 before intake stops,\nso a load balancer polling readiness stops sending here first (a second signal ends the wait)")
}

func (c *serveConfig) roles() ([]string, error) {
	var rs []string
	for _, r := range strings.Split(c.Roles, ",") {
		r = strings.TrimSpace(r)
		if r == "" {
			continue
		}
		if !slices.Contains(allRoles, r) {
			return nil, fmt.Errorf("--roles: unknown role %q (roles: %s)", r, strings.Join(allRoles, ", "))
		}
		if !slices.Contains(rs, r) {
			rs = append(rs, r)
		}
	}
	if len(rs) == 0 {
		return nil, fmt.Errorf("--roles is empty: name at least one of %s", strings.Join(allRoles, ", "))
	}
	return rs, nil
}

func (c *serveConfig) validate() error {
	if _, err := c.roles(); err != nil {
		return err
	}
	if _, err := pgxpool.ParseConfig(c.Postgres); err != nil {
		return fmt.Errorf("--postgres %q is not a PostgreSQL URL: %v", redactURL(c.Postgres), err)
	}
	if _, err := redis.ParseURL(c.Redis); err != nil {
		return fmt.Errorf("--redis %q is not a Redis URL: %v", redactURL(c.Redis), err)
	}
	if c.ShutdownTimeout <= 0 {
		return fmt.Errorf("--shutdown-timeout %s: want a positive duration", c.ShutdownTimeout)
	}
	if c.ShutdownDelay < 0 || c.ShutdownDelay > maxShutdownDelay {
		return fmt.Errorf("--shutdown-delay %s: want 0 (none) up to %s", c.ShutdownDelay, maxShutdownDelay)
	}
	roles, _ := c.roles()
	checks := []interface{ Validate() error }{c.Streams, c.Producer, c.Bridge}
	if slices.Contains(roles, roleHTTP) {
		checks = append(checks, c.HTTP)
	}
	if slices.Contains(roles, roleBroker) {
		checks = append(checks, c.MQTT)
	}
	for _, v := range checks {
		if err := v.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// parseServe parses serve's flags and environment into a checked config.
func parseServe(name, synopsis, about string, args []string, stderr io.Writer, register func(*serveConfig, *flag.FlagSet)) (*serveConfig, error) {
	var cfg serveConfig
	fs := cli.NewFlagSet(name, synopsis, about)
	fs.SetOutput(stderr)
	register(&cfg, fs.FlagSet)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err}
	}
	if fs.NArg() > 0 {
		return nil, usageError{fmt.Errorf("%s takes no arguments, got %q", name, fs.Args())}
	}
	cfg.Bridge.Postgres = cfg.Postgres
	cfg.Bridge.Streams = cfg.Streams
	cfg.Bridge.ShutdownTimeout = cfg.ShutdownTimeout
	cfg.HTTP.Limits = cfg.Limits
	cfg.HTTP.ShutdownTimeout = cfg.ShutdownTimeout
	cfg.MQTT.Limits = cfg.Limits
	cfg.MQTT.ShutdownTimeout = cfg.ShutdownTimeout
	return &cfg, nil
}

func runServe(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, err := parseServe("serve", "firehose serve [flags]",
		"Runs firehose's roles in this process until SIGTERM or Ctrl-C, then stops intake, writes what is queued\nto Redis, commits what the bridge holds, and exits 0.",
		args, stderr, (*serveConfig).registerFlags)
	if err != nil {
		return err
	}
	if err := cfg.validate(); err != nil {
		return usageError{err}
	}
	logger, err := newLogger(cfg.LogLevel, cfg.LogFormat, stderr)
	if err != nil {
		return usageError{err}
	}
	st, err := startStack(ctx, cfg, logger)
	if err != nil {
		return err
	}
	return st.wait(ctx)
}

func newLogger(level, format string, w io.Writer) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// redactURL hides a password in a connection URL for logs and errors.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}

// connectRedis opens a client and checks that Redis answers.
func connectRedis(ctx context.Context, rawURL string, poolSize int) (*redis.Client, error) {
	opt, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("--redis %q is not a Redis URL: %v", redactURL(rawURL), err)
	}
	opt.PoolSize = max(opt.PoolSize, poolSize)
	// No automatic retries: go-redis would resend a whole pipeline after a
	// read error, storing an XADD twice though its caller is acked once.
	// Callers retry themselves where that is safe.
	opt.MaxRetries = -1
	// Deadlines of the producer's and bridge's contexts bound every call.
	opt.ContextTimeoutEnabled = true
	opt.DialTimeout = 2 * time.Second
	opt.ReadTimeout = 3 * time.Second
	opt.WriteTimeout = 3 * time.Second
	rdb := redis.NewClient(opt)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("cannot reach Redis at %s: %v; start it (scripts/services.sh ensure) or point --redis / FIREHOSE_REDIS_URL at it", redactURL(rawURL), err)
	}
	return rdb, nil
}

// connectPostgres opens a small pool (migrations, /health/db) and checks that
// the database answers.
func connectPostgres(ctx context.Context, rawURL string) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(rawURL)
	if err != nil {
		return nil, fmt.Errorf("--postgres %q is not a PostgreSQL URL: %v", redactURL(rawURL), err)
	}
	pc.MaxConns = 4
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(pctx, pc)
	if err == nil {
		err = pool.Ping(pctx)
		if err != nil {
			pool.Close()
		}
	}
	if err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "3D000" {
			return nil, fmt.Errorf("database %q does not exist on %s: create it with `createdb -h %s -p %d %s` (make demo does), or point --postgres / FIREHOSE_POSTGRES_URL at another",
				pc.ConnConfig.Database, redactURL(rawURL), pc.ConnConfig.Host, pc.ConnConfig.Port, pc.ConnConfig.Database)
		}
		return nil, fmt.Errorf("cannot reach PostgreSQL at %s: %v; start it (scripts/services.sh ensure) or point --postgres / FIREHOSE_POSTGRES_URL at it", redactURL(rawURL), err)
	}
	return pool, nil
}

// redisLogger sends go-redis's own messages (dial retries and the like) to
// slog at debug level: the errors that matter reach us as return values.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	l.log.Debug(fmt.Sprintf(format, v...), "component", "go-redis")
}

// warnIfVolatile warns once when Redis would lose acknowledged readings on a
// restart. Managed Redis may refuse CONFIG: then nothing is said.
func warnIfVolatile(ctx context.Context, rdb *redis.Client, log *slog.Logger) {
	v, err := rdb.ConfigGet(ctx, "appendonly").Result()
	if err == nil && v["appendonly"] == "no" {
		log.Warn("Redis runs without appendonly: readings acknowledged but not yet committed to PostgreSQL are lost if Redis restarts; for production set appendonly yes (appendfsync everysec or always)")
	}
}

// component is one running part of the stack, with a context of its own so
// that the stack stops the parts one after another.
type component struct {
	name   string
	cancel context.CancelFunc
	done   chan struct{} // closed when run returned
	err    error         // what run returned; read after done
}

func startComponent(name string, run func(context.Context) error) *component {
	ctx, cancel := context.WithCancel(context.Background())
	c := &component{name: name, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		c.err = run(ctx)
	}()
	return c
}

// stack is firehose serve's running roles, stopped in dependency order.
type stack struct {
	cfg      *serveConfig
	log      *slog.Logger
	rdb      *redis.Client
	pg       *pgxpool.Pool
	reg      *prometheus.Registry
	producer *ingest.Producer
	http     *httpgw.Server
	mqtt     *broker.Broker
	admin    *http.Server
	adminLn  net.Listener
	// Components in stop order: edges first, then the producer they feed, then
	// the bridge.
	parts []*component
}

// startStack connects to the services, applies the schema and starts the
// configured roles. Every start-up failure (unreachable service, port in
// use) is returned before anything runs.
func startStack(ctx context.Context, cfg *serveConfig, logger *slog.Logger) (*stack, error) {
	roles, _ := cfg.roles()
	has := func(r string) bool { return slices.Contains(roles, r) }
	redis.SetLogger(redisLogger{logger})

	st := &stack{cfg: cfg, log: logger, reg: prometheus.NewRegistry()}
	st.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ok := false
	defer func() {
		if !ok {
			st.close()
		}
	}()

	var err error
	if st.rdb, err = connectRedis(ctx, cfg.Redis, cfg.Producer.Pipelines+cfg.Streams.Count+8); err != nil {
		return nil, err
	}
	if err := cfg.Streams.Check(ctx, st.rdb); err != nil {
		return nil, err
	}
	warnIfVolatile(ctx, st.rdb, logger)
	if st.pg, err = connectPostgres(ctx, cfg.Postgres); err != nil {
		return nil, err
	}
	applied, err := schema.Apply(ctx, st.pg)
	if err != nil {
		return nil, fmt.Errorf("apply schema: %w", err)
	}
	if len(applied) > 0 {
		logger.Info("schema migrations applied", "migrations", strings.Join(applied, ","))
	}
	logger.Info("starting firehose", "version", buildVersion(), "roles", strings.Join(roles, ","),
		"postgres", redactURL(cfg.Postgres), "redis", redactURL(cfg.Redis), "redis_prefix", cfg.Streams.Prefix,
		"shards", cfg.Streams.Count, "batch_size", cfg.Bridge.BatchSize, "batch_age", cfg.Bridge.BatchAge,
		"high_water", cfg.Producer.HighWater, "producer_pipelines", cfg.Producer.Pipelines,
		"http_api_keys", cfg.HTTP.APIKeysFile != "", "http_tls", cfg.HTTP.TLSCert != "", "mqtt_auth", cfg.MQTT.AuthFile != "")

	var edges, back []*component
	if has(roleHTTP) || has(roleBroker) {
		st.producer = ingest.NewProducer(st.rdb, cfg.Streams, cfg.Producer, logger, st.reg)
	}
	if has(roleBroker) {
		if st.mqtt, err = broker.New(cfg.MQTT, st.producer, logger, st.reg); err != nil {
			return nil, fmt.Errorf("mqtt broker: %w", err)
		}
		if err := st.mqtt.Listen(); err != nil {
			return nil, err
		}
	}
	if has(roleHTTP) {
		dbCheck := func(ctx context.Context) error { return st.pg.Ping(ctx) }
		if st.http, err = httpgw.New(cfg.HTTP, st.producer, dbCheck, logger, st.reg); err != nil {
			return nil, fmt.Errorf("http gateway: %w", err)
		}
		if err := st.http.Listen(); err != nil {
			return nil, err
		}
		logger.Info("http gateway listening", "addr", st.http.Addr().String())
	} else if cfg.AdminAddr != "" {
		if err := st.listenAdmin(); err != nil {
			return nil, err
		}
	}
	if has(roleBridge) {
		b, err := bridge.New(cfg.Bridge, st.rdb, logger, st.reg)
		if err != nil {
			return nil, fmt.Errorf("bridge: %w", err)
		}
		back = append(back, startComponent(roleBridge, b.Run))
	}
	if st.producer != nil {
		back = append([]*component{startComponent("producer", st.producer.Run)}, back...)
	}
	if st.http != nil {
		edges = append(edges, startComponent(roleHTTP, st.http.Run))
	}
	if st.mqtt != nil {
		edges = append(edges, startComponent(roleBroker, st.mqtt.Run))
	}
	if cfg.DebugAddr != "" {
		dbg, err := listenDebug(cfg.DebugAddr, logger)
		if err != nil {
			return nil, err
		}
		edges = append(edges, startComponent("debug", dbg))
	}
	if st.admin != nil {
		edges = append(edges, startComponent("admin", st.serveAdmin))
	}
	st.parts = append(edges, back...)
	ok = true
	return st, nil
}

// listenDebug binds --debug-addr and returns the run function of a server of
// Go's profiles.
func listenDebug(addr string, log *slog.Logger) (func(context.Context) error, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %v; choose another with --debug-addr", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Info("pprof listening", "addr", ln.Addr().String())
	return func(ctx context.Context) error {
		go func() {
			<-ctx.Done()
			srv.Close()
		}()
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("debug endpoint: %w", err)
		}
		return nil
	}, nil
}

// listenAdmin binds --admin-addr for processes without the HTTP gateway.
func (st *stack) listenAdmin() error {
	ln, err := net.Listen("tcp", st.cfg.AdminAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %v; choose another with --admin-addr", st.cfg.AdminAddr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(st.reg, promhttp.HandlerOpts{}))
	ok := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"ok"}`)
	}
	mux.HandleFunc("GET /livez", ok)
	mux.HandleFunc("GET /readyz", ok)
	mux.HandleFunc("GET /health", ok)
	st.admin = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	st.adminLn = ln
	st.log.Info("admin endpoint listening", "addr", ln.Addr().String())
	return nil
}

func (st *stack) serveAdmin(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- st.admin.Serve(st.adminLn) }()
	select {
	case err := <-errc:
		return fmt.Errorf("admin endpoint: %w", err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return st.admin.Shutdown(sctx)
	}
}

// wait runs until ctx ends or a component fails, then stops every component in
// order, each after the one before it has finished.
func (st *stack) wait(ctx context.Context) error {
	failures := make(chan error, len(st.parts))
	watching := make(chan struct{})
	for _, c := range st.parts {
		go func() {
			select {
			case <-c.done:
				if c.err != nil {
					failures <- fmt.Errorf("%s: %w", c.name, c.err)
				}
			case <-watching:
			}
		}()
	}
	var failed error
	select {
	case <-ctx.Done():
		if st.cfg.ShutdownDelay > 0 {
			failed = st.delayShutdown(failures)
		}
		st.log.Info("shutting down", "timeout", st.cfg.ShutdownTimeout)
	case failed = <-failures:
		st.log.Error("component failed; shutting down", "err", failed)
	}
	close(watching)
	if failed != nil {
		// Reported once, above, not again by stop.
		return errors.Join(failed, st.stop(true))
	}
	return st.stop(false)
}

// delayShutdown keeps serving for --shutdown-delay with the gateway's
// readiness answering 503, so load balancers stop routing here before the
// listeners close. Another SIGTERM or Ctrl-C ends the wait, and so does a
// component's failure, which it returns.
func (st *stack) delayShutdown(failures <-chan error) error {
	if st.http != nil {
		st.http.StartDraining()
	}
	st.log.Info("readiness answers 503; intake stops after the shutdown delay", "delay", st.cfg.ShutdownDelay)
	again := make(chan os.Signal, 1)
	signal.Notify(again, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(again)
	t := time.NewTimer(st.cfg.ShutdownDelay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-again:
		st.log.Info("signalled again: shutting down now")
	case err := <-failures:
		st.log.Error("component failed; shutting down", "err", err)
		return err
	}
	return nil
}

// stop stops the components in order within the shutdown timeout and closes
// the connections.
func (st *stack) stop(afterFailure bool) error {
	deadline := time.NewTimer(st.cfg.ShutdownTimeout + 5*time.Second)
	defer deadline.Stop()
	var errs []error
	for _, c := range st.parts {
		c.cancel()
		select {
		case <-c.done:
			if c.err != nil && !afterFailure {
				errs = append(errs, fmt.Errorf("stop %s: %w", c.name, c.err))
			}
		case <-deadline.C:
			st.close()
			return fmt.Errorf("stop %s: not done within the shutdown timeout %s", c.name, st.cfg.ShutdownTimeout)
		}
	}
	st.close()
	if len(errs) == 0 {
		st.log.Info("stopped cleanly")
	}
	return errors.Join(errs...)
}

func (st *stack) close() {
	if st.pg != nil {
		st.pg.Close()
	}
	if st.rdb != nil {
		st.rdb.Close()
	}
	if st.adminLn != nil {
		st.adminLn.Close() // already closed after a Shutdown; harmless
	}
}

func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseServe("migrate", "firehose migrate [flags]",
		"Applies firehose's schema (embedded, versioned migrations) to PostgreSQL and exits.\nfirehose serve also does this at start-up; running both at once is safe.",
		args, stderr, func(c *serveConfig, fs *flag.FlagSet) {
			fs.StringVar(&c.Postgres, "postgres", "postgres://localhost:5432/firehose", "PostgreSQL connection URL")
		})
	if err != nil {
		return err
	}
	pg, err := connectPostgres(ctx, cfg.Postgres)
	if err != nil {
		return err
	}
	defer pg.Close()
	applied, err := schema.Apply(ctx, pg)
	if err != nil {
		return fmt.Errorf("apply schema: %w", err)
	}
	if len(applied) == 0 {
		fmt.Fprintln(stdout, "schema is current")
		return nil
	}
	fmt.Fprintf(stdout, "applied %s\n", strings.Join(applied, ", "))
	return nil
}
