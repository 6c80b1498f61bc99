package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"firehose/bridge"
	"firehose/broker"
	"firehose/httpgw"
	"firehose/ingest"
	"firehose/internal/admin"
	"firehose/internal/connect"
	"firehose/internal/console"
	"firehose/internal/lifecycle"
	"firehose/internal/retention"
	"firehose/mqttmsg"
	"firehose/partition"
	"firehose/registry"
	"firehose/sparkplug"
	"firehose/stream"
	"firehose/subscriber"
)

// stack is firehose serve's running roles, stopped in dependency order.
type stack struct {
	cfg      *serveConfig
	log      *slog.Logger
	rdb      redis.UniversalClient
	pg       *pgxpool.Pool // nil when no role here needs PostgreSQL
	reg      *prometheus.Registry
	producer *stream.Producer
	http     *httpgw.Server
	mqtt     *broker.Broker
	sub      *subscriber.Subscriber
	ageBound *ingest.AgeBound // the edges' bound by the retention; nil without edges
	admin    *admin.Server
	draining atomic.Bool // shutting down: the admin endpoint's /readyz answers 503
	migrated bool        // the schema was applied at start (PostgreSQL answered)
	// Stages in stop order, each stopped in parallel once the one before has
	// finished: the edges (they stop taking readings and answer what they
	// took), the producer they feed (it writes what is queued), the bridge
	// (its final commit), then the admin and debug endpoints, so metrics and
	// readiness stay visible to the end.
	parts lifecycle.Group
}

// startStack connects to the services, checks what Redis promises, and starts
// the configured roles. Start-up failures (unreachable Redis, a Redis that may
// evict streams, a port in use, a database that does not exist) are returned
// before anything runs. PostgreSQL being unreachable is not one of them: the
// edges do not need it, and the bridge waits for it (see runBridge).
func startStack(ctx context.Context, cfg *serveConfig, logger *slog.Logger) (*stack, error) {
	roles, _ := cfg.roles()
	has := func(r string) bool { return slices.Contains(roles, r) }
	redis.SetLogger(connect.RedisLogger{Log: logger})

	st := &stack{cfg: cfg, log: logger, reg: prometheus.NewRegistry()}
	st.parts = lifecycle.Group{Timeout: cfg.ShutdownTimeout, Delay: cfg.ShutdownDelay, Log: logger, Drain: st.startDraining, Close: st.close}
	st.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ok := false
	defer func() {
		if !ok {
			st.close()
		}
	}()

	var err error
	waitAddr := cfg.AdminAddr // where /readyz answers 503 while Redis is not serving yet
	var waitTLS *tls.Config   // and over TLS where the gateway will serve HTTPS
	if has(roleHTTP) {
		waitAddr = cfg.HTTP.Addr
		if cfg.HTTP.TLSCert != "" {
			cert, err := tls.LoadX509KeyPair(cfg.HTTP.TLSCert, cfg.HTTP.TLSKey)
			if err != nil {
				return nil, fmt.Errorf("--http-tls-cert: %w", err)
			}
			waitTLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		}
	}
	if st.rdb, err = connect.RedisWaiting(ctx, cfg.redisOptions(cfg.Producer.Pipelines+cfg.Streams.Count+8), connect.Wait{
		For: cfg.RedisWait, ProbeAddr: waitAddr, ProbeTLS: waitTLS, Check: cfg.Streams.Check, Log: logger}); err != nil {
		return nil, err
	}
	cfg.Bridge.Streams = cfg.Streams // with the deployment's key layout
	hasEdges := has(roleHTTP) || has(roleBroker) || has(roleSubscriber)
	// The settings every process of the deployment must share
	// (docs/guarantees.md, "Exactly once end to end", and docs/partitions.md).
	if hasEdges {
		if err := stream.CheckDedup(ctx, st.rdb, cfg.Streams, cfg.Producer.Dedup, cfg.Producer.DedupWindow); err != nil {
			return nil, err
		}
	}
	rec, bound, err := retention.Claim{Retention: cfg.Partition.Retention, Interval: cfg.Partition.Interval,
		MaxAge: cfg.Limits.MaxAge, MaxAgeSet: cfg.MaxAgeSet, Edges: hasEdges}.Start(ctx, st.rdb, cfg.Streams, logger)
	if err != nil {
		return nil, err
	}
	cfg.Partition.Retention = cmp.Or(cfg.Partition.Retention, rec.Retention) // a bridge without --retention applies the recorded one
	st.ageBound, cfg.HTTP.Limits.Retained, cfg.MQTT.Limits.Retained = bound, bound, bound
	if err := stream.CheckRedisPersistence(ctx, st.rdb, cfg.RedisAllowEviction, cfg.Producer.MinReplicas, logger); err != nil {
		return nil, err
	}
	if cfg.Producer.Dedup != "" && cfg.Producer.Dedup != stream.DedupOff && hasEdges {
		if err := stream.CheckDedupSupport(ctx, st.rdb); err != nil {
			return nil, err
		}
	}
	if has(roleBridge) || has(roleHTTP) {
		// The gateway's /health/db uses the pool too; it connects on demand.
		if st.pg, err = connect.OpenPostgres(cfg.Postgres); err != nil {
			return nil, err
		}
	}
	if has(roleBridge) {
		if st.migrated, err = connect.CheckPostgres(ctx, st.pg, cfg.Postgres, logger); err != nil {
			return nil, err
		}
	}
	logger.Info("starting firehose", "version", buildVersion(), "config", cfg.ConfigFile, "roles", strings.Join(roles, ","),
		"postgres", connect.RedactURL(cfg.Postgres), "redis", connect.RedactURL(cfg.Redis), "redis_prefix", cfg.Streams.Prefix,
		"shards", cfg.Streams.Count, "batch_size", cfg.Bridge.BatchSize, "batch_age", cfg.Bridge.BatchAge,
		"high_water", cfg.Producer.HighWater, "producer_pipelines", cfg.Producer.Pipelines,
		"http_api_keys", cfg.HTTP.APIKeysFile != "", "http_tls", cfg.HTTP.TLSCert != "", "http_device_auth", cfg.HTTP.DeviceAuth, "mqtt_auth", cfg.MQTT.AuthFile != "")

	// Sparkplug B aliases and sequence numbers live beside the deployment's
	// streams, where every broker sees them, under one hash tag (its writes
	// are scripts over a node's hash and the account). Their size counts
	// toward --high-water at every edge, HTTP gateways included.
	spbStore := stream.NewSparkplugStore(st.rdb, cfg.Streams.SparkplugPrefix())
	cfg.Producer.StateBytesKey = spbStore.BytesKey()
	if hasEdges {
		st.producer = stream.NewProducer(st.rdb, cfg.Streams, cfg.Producer, logger, st.reg)
	}
	if has(roleSubscriber) {
		if err := st.startSubscriber(ctx, spbStore); err != nil {
			return nil, err
		}
	}
	// One source of device credentials for both edges (--mqtt-auth, and
	// --http-device-auth mqtt): they check the same version, and it is read
	// and watched once. The broker watches it when it runs here; otherwise
	// the component "credentials" does.
	var creds broker.CredentialSource
	httpDevices := has(roleHTTP) && cfg.HTTP.DeviceAuth == httpgw.DeviceAuthMQTT
	switch {
	case (has(roleBroker) || httpDevices) && cfg.MQTT.AuthFile == broker.AuthRegistry:
		if creds, err = openRegistry(ctx, cfg.Postgres, logger); err != nil {
			return nil, err
		}
	case httpDevices:
		if creds, err = broker.OpenCredentialsFile(cfg.MQTT.AuthFile, logger); err != nil {
			return nil, fmt.Errorf("load --mqtt-auth for --http-device-auth: %w", err)
		}
	}
	if httpDevices {
		cfg.HTTP.Devices = credentialDevices{creds}
	}
	if has(roleBroker) {
		cfg.MQTT.SparkplugStore = spbStore
		cfg.MQTT.Credentials = creds // nil: the broker reads --mqtt-auth FILE itself
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
	}
	// The gateway serves /metrics and /readyz itself; the admin address
	// still serves them beside the console when there is one.
	if cfg.AdminAddr != "" && (st.http == nil || cfg.AdminToken != "") {
		var p admin.Producer // none in a bridge-only process
		if st.producer != nil {
			p = st.producer
		}
		if st.admin, err = admin.Listen(cfg.AdminAddr, st.reg, admin.Readyz(&st.draining, p), logger); err != nil {
			return nil, err
		}
		if cfg.AdminToken != "" {
			console.New(st.consoleConfig(spbStore), logger).Register(st.admin.Mux())
			logger.Info("web console on", "url", "http://"+st.admin.Addr().String()+"/console/")
		}
	}
	var b *bridge.Bridge
	if has(roleBridge) {
		if b, err = bridge.New(cfg.Bridge, st.rdb, logger, st.reg); err != nil {
			return nil, fmt.Errorf("bridge: %w", err)
		}
	}
	var endpoints []*lifecycle.Component
	if cfg.DebugAddr != "" {
		dbg, err := admin.ListenDebug(cfg.DebugAddr, logger)
		if err != nil {
			return nil, err
		}
		endpoints = append(endpoints, lifecycle.Start("debug", dbg))
	}

	var edges []*lifecycle.Component
	if st.http != nil {
		edges = append(edges, lifecycle.Start(roleHTTP, st.http.Run))
	}
	if st.mqtt != nil {
		edges = append(edges, lifecycle.Start(roleBroker, st.mqtt.Run))
	}
	if st.sub != nil {
		edges = append(edges, lifecycle.Start(roleSubscriber, st.sub.Run))
	}
	if creds != nil && st.mqtt == nil {
		edges = append(edges, lifecycle.Start("credentials", func(ctx context.Context) error {
			creds.Watch(ctx, func(_, cur broker.Credentials) {
				logger.Info("device credentials changed", "devices", len(cur))
			})
			return nil
		}))
	}
	if st.ageBound != nil {
		edges = append(edges, lifecycle.Start("retention", func(ctx context.Context) error {
			return retention.Follow(ctx, st.rdb, cfg.Streams, st.ageBound, logger)
		}))
	}
	st.parts.Add(edges...)
	if st.producer != nil {
		st.parts.Add(lifecycle.Start("producer", st.producer.Run))
	}
	if b != nil {
		st.parts.Add(lifecycle.Start(roleBridge, func(ctx context.Context) error {
			return st.runBridge(ctx, b)
		}))
	}
	if st.admin != nil {
		endpoints = append(endpoints, lifecycle.Start("admin", st.admin.Run))
	}
	st.parts.Add(endpoints...)
	ok = true
	return st, nil
}

// registryLoadTimeout bounds serve's wait at start for the device registry:
// past it the broker starts anyway, answering CONNECTs 0x88 until the
// registry's watch loads it.
const registryLoadTimeout = 10 * time.Second

// openRegistry is the device registry for --mqtt-auth postgres, loaded if
// PostgreSQL answers within registryLoadTimeout: the broker does not wait
// for PostgreSQL (its watch keeps trying; see registry.Source).
func openRegistry(ctx context.Context, pgURL string, logger *slog.Logger) (*registry.Source, error) {
	src, err := registry.Open(pgURL, logger)
	if err != nil {
		return nil, err
	}
	lctx, cancel := context.WithTimeout(ctx, registryLoadTimeout)
	defer cancel()
	if err := src.Load(lctx); err != nil {
		logger.Warn("device registry not loaded: the broker answers CONNECTs 0x88 (server unavailable), and the HTTP gateway's device authentication 503, until it is", "err", err)
	}
	return src, nil
}

// credentialDevices is a broker.CredentialSource as the HTTP gateway's
// httpgw.Devices: each request reads the version in use (an atomic load and
// a map lookup), so a change applies from the next request on.
type credentialDevices struct{ src broker.CredentialSource }

func (d credentialDevices) Device(id string) (httpgw.Device, bool, error) {
	creds := d.src.Credentials()
	if creds == nil {
		return httpgw.Device{}, false, httpgw.ErrDevicesNotLoaded
	}
	c, ok := creds[id]
	return httpgw.Device{Hash: c.Hash}, ok, nil
}

// startSubscriber builds the subscriber role and opens its first session:
// a broker that refuses the connection or a subscription stops the start.
func (st *stack) startSubscriber(ctx context.Context, spb *stream.SparkplugStore) error {
	cfg := st.cfg
	dec, err := newDecoder(cfg, spb)
	if err != nil {
		return err
	}
	sessions := st.producer.SessionState(cfg.Subscribe.ClientID) // waits for replicas as the producer does
	if st.sub, err = subscriber.New(cfg.Subscribe, st.producer, sessions, dec, st.log, st.reg); err != nil {
		return fmt.Errorf("subscriber: %w", err)
	}
	st.sub.ReportTo(stream.NewSubscriberStates(st.rdb, cfg.Streams)) // for firehose status
	return st.sub.Start(ctx)
}

// newDecoder reads subscribed messages as the broker role reads its
// publishes: the readings topic, the rules and Sparkplug B, with its state
// beside the streams. Every edge node is the subscriber's (one owner), so
// the per-credential bound on edge nodes does not apply; the per-node size
// bound does.
func newDecoder(cfg *serveConfig, spb *stream.SparkplugStore) (subscriber.Decoder, error) {
	var tracker *sparkplug.Tracker
	if cfg.MQTT.Sparkplug {
		tracker = sparkplug.NewTracker(spb)
		tracker.MaxNodeBytes, tracker.StateTTL = cfg.MQTT.SparkplugMaxNodeBytes, cfg.MQTT.SparkplugStateTTL
	}
	rd, err := mqttmsg.New(mqttmsg.Config{Topic: cfg.MQTT.Topic, Rules: cfg.MQTT.Rules, Sparkplug: tracker, Limits: cfg.Limits})
	if err != nil {
		return nil, fmt.Errorf("subscriber: %w", err)
	}
	return subscriber.NewDecoder(rd, cfg.Subscribe.ClientID), nil
}

// runBridge, unless the schema was applied at start, waits until PostgreSQL
// answers and applies it (connect.ApplySchemaWaiting, so a process whose
// database is down still serves its edges); then it brings the rules' typed
// tables up to date as firehose migrate --config does, waiting out
// PostgreSQL going away meanwhile (a table changed by hand in a way a rule
// contradicts stops the start, saying what to do), and
// runs the bridge until ctx ends, beside the maintenance of the partitions
// of readings and of the typed tables.
func (st *stack) runBridge(ctx context.Context, b *bridge.Bridge) error {
	if !st.migrated {
		if err := connect.ApplySchemaWaiting(ctx, st.pg, st.log); err != nil || ctx.Err() != nil {
			return err
		}
	}
	pcfg := st.cfg.Partition
	if tables := st.cfg.MQTT.Rules.Tables(); len(tables) > 0 {
		ch, err := connect.EnsureTablesWaiting(ctx, st.pg, tables, st.log)
		if err != nil || ctx.Err() != nil {
			return err
		}
		if len(ch.Created)+len(ch.Added)+len(ch.Indexed) > 0 {
			st.log.Info("typed tables brought up to date", "created", ch.Created, "added", ch.Added, "indexed", ch.Indexed)
		}
		pcfg.Tables = tables
	}
	return partition.New(pcfg, st.pg, st.log, st.reg).RunBeside(ctx, b.Run)
}

// healthChecks are the services the console shows the health of: Redis,
// and PostgreSQL where a role here uses it.
func (st *stack) healthChecks() []console.Check {
	checks := []console.Check{{Name: "Redis", Ping: func(ctx context.Context) error { return st.rdb.Ping(ctx).Err() }}}
	if st.pg != nil {
		checks = append(checks, console.Check{Name: "PostgreSQL", Ping: st.pg.Ping})
	}
	return checks
}

// deadLetters is what the console lists and replays the dead letters
// with: nil (the page says so) when no role here uses PostgreSQL. Edge dead
// letters resolve as the broker would now, against the Sparkplug B state
// in spb.
func (st *stack) deadLetters(spb *stream.SparkplugStore) console.DeadLetters {
	if st.pg == nil {
		return nil
	}
	return &consoleLetters{pg: st.pg, rdb: st.rdb, streams: st.cfg.Streams, limits: st.cfg.Limits,
		resolver: mqttmsg.NewResolver(spb, st.cfg.MQTT.Rules, st.cfg.Limits), wait: consoleReplayWait}
}

// wait runs until ctx ends or a component fails, then stops the components
// stage by stage (lifecycle.Group.Wait).
func (st *stack) wait(ctx context.Context) error { return st.parts.Wait(ctx) }

// stop stops the components stage by stage and closes the connections.
func (st *stack) stop(afterFailure bool) error { return st.parts.Stop(afterFailure) }

// startDraining turns every readiness endpoint of the process to 503.
func (st *stack) startDraining() {
	st.draining.Store(true)
	if st.http != nil {
		st.http.StartDraining()
	}
}

func (st *stack) close() {
	if st.pg != nil {
		st.pg.Close()
	}
	if st.rdb != nil {
		st.rdb.Close()
	}
	if st.admin != nil {
		st.admin.Close()
	}
}
