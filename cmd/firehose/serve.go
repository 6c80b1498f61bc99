package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"firehose/bridge"
	"firehose/broker"
	"firehose/httpgw"
	"firehose/ingest"
	"firehose/internal/cli"
	"firehose/internal/connect"
	"firehose/partition"
	"firehose/stream"
	"firehose/subscriber"
)

// Roles firehose serve can run.
const (
	roleBroker     = "broker"
	roleHTTP       = "httpgw"
	roleBridge     = "bridge"
	roleSubscriber = "subscriber"
)

// maxShutdownDelay bounds --shutdown-delay: longer than any readiness probe
// needs, short of hanging a deployment's rollout.
const maxShutdownDelay = 5 * time.Minute

var allRoles = []string{roleBroker, roleHTTP, roleBridge, roleSubscriber}

// defaultRoles are the roles serve runs unless --roles says otherwise: the
// subscriber needs a broker to subscribe to.
var defaultRoles = []string{roleBroker, roleHTTP, roleBridge}

// serveConfig is everything firehose serve reads from flags and environment.
type serveConfig struct {
	Roles    string
	Postgres string
	Redis    string
	// RedisSentinelMaster names the master Redis Sentinel watches; with it,
	// Redis lists the sentinels, not Redis itself.
	RedisSentinelMaster string
	// RedisCluster is --redis-cluster: auto (ask the server), yes or no.
	RedisCluster string
	Streams      stream.Streams
	Limits       ingest.Limits
	Producer     stream.ProducerConfig
	Bridge       bridge.Config
	Partition    partition.Config
	HTTP         httpgw.Config
	MQTT         broker.Config
	Subscribe    subscriber.Config
	// RedisAllowEviction accepts a Redis whose maxmemory-policy may evict
	// keys (refused by default: it can delete streams of acknowledged readings).
	RedisAllowEviction bool
	AdminAddr          string
	// AdminToken turns the web console on at AdminAddr (internal/console).
	AdminToken      string
	DebugAddr       string
	LogLevel        string
	LogFormat       string
	ShutdownTimeout time.Duration
	ShutdownDelay   time.Duration
	// RedisWait bounds how long serve waits at start for a Redis that
	// answers but does not serve yet (a Redis Cluster forming).
	RedisWait   time.Duration
	MemoryLimit string // --memory-limit, e.g. "384MiB"; "" leaves Go's default
	// ConfigFile is the configuration file serve read (--config), or "".
	ConfigFile string
	// MaxAgeSet says --max-reading-age was given (flag, environment or
	// file): serve then refuses to start when it exceeds what the
	// retention leaves (see retention.Bound).
	MaxAgeSet bool
}

// registerCommon registers the connection and logging flags every command
// that talks to the services shares.
func (c *serveConfig) registerCommon(fs *flag.FlagSet) {
	fs.StringVar(&c.Postgres, "postgres", "postgres://localhost:5432/firehose", "PostgreSQL connection URL (libpq form; e.g. add ?sslmode=require)")
	fs.StringVar(&c.Redis, "redis", "redis://localhost:6379/0", "Redis connection URL (redis:// or rediss:// for TLS). A Redis Cluster: any one node, or several as\nredis://node1:7000?addr=node2:7001&addr=node3:7002 (see --redis-cluster). With --redis-sentinel-master, the sentinels:\nredis://[:password@]sentinel1:26379/0?addr=sentinel2:26379&addr=sentinel3:26379 (the password is the master's)")
	fs.StringVar(&c.RedisCluster, "redis-cluster", connect.ClusterAuto, "whether --redis is a Redis Cluster: auto (a URL with addr= parameters is; otherwise ask the node, INFO cluster),\nyes, or no (a single node even if it says it is a cluster node)")
	fs.StringVar(&c.RedisSentinelMaster, "redis-sentinel-master", "", "name of the master Redis Sentinel monitors: firehose asks the sentinels in --redis for the current master\nand follows a failover (pair it with --redis-min-replicas 1 so that a failover loses nothing acknowledged)")
	c.Streams.RegisterFlags(fs)
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "text", "log format: text or json")
}

// redisOptions is how to reach Redis with a pool of poolSize connections.
func (c *serveConfig) redisOptions(poolSize int) connect.RedisOptions {
	return connect.RedisOptions{URL: c.Redis, SentinelMaster: c.RedisSentinelMaster, Cluster: c.RedisCluster, PoolSize: poolSize}
}

func (c *serveConfig) registerFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Roles, "roles", strings.Join(defaultRoles, ","), "comma-separated roles to run in this process: "+strings.Join(allRoles, ", ")+"\n(subscriber: take readings from an existing MQTT broker, see --subscribe-broker)")
	c.registerCommon(fs)
	c.Limits.RegisterFlags(fs)
	c.Producer.RegisterFlags(fs)
	c.Bridge.RegisterFlags(fs)
	c.Partition.RegisterFlags(fs)
	c.HTTP.RegisterFlags(fs)
	c.MQTT.RegisterFlags(fs)
	c.Subscribe.RegisterFlags(fs)
	fs.BoolVar(&c.RedisAllowEviction, "redis-allow-eviction", false, "start even though Redis's maxmemory-policy is not noeviction (it may then delete streams of\nacknowledged readings under memory pressure); without it firehose refuses to start")
	fs.StringVar(&c.AdminAddr, "admin-addr", "", "address for /metrics, /livez and /readyz when the httpgw role does not run here (they are on\n--http-addr when it does); /readyz answers 503 while the broker's producer refuses readings or\nthe process is shutting down; with --admin-token it also serves the web console, httpgw role or not")
	fs.StringVar(&c.AdminToken, "admin-token", "", "turns on the web console at http://ADMIN-ADDR/console/ (docs/console.md), on --admin-addr even when the httpgw\nrole runs here; every page asks for this token once (a login form; or Authorization: Bearer). Empty: no console")
	fs.StringVar(&c.DebugAddr, "debug-addr", "", "address for Go's /debug/pprof profiles (off when empty; bind it to loopback)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 15*time.Second, "on SIGTERM, the longest to wait for in-flight requests and the final commit")
	fs.StringVar(&c.MemoryLimit, "memory-limit", "", "soft limit of the process's memory, e.g. 384MiB or 2GiB (Go's runtime/debug.SetMemoryLimit): the garbage\ncollector works harder as the heap nears it instead of letting garbage grow to twice the live data;\nempty: Go's default (GOMEMLIMIT if set, else none). Set it under the container's limit; see the MQTT memory bounds")
	fs.DurationVar(&c.RedisWait, "redis-wait", 60*time.Second, "at start, how long to wait for a Redis that answers but does not serve yet (a Redis Cluster being created\nor converging: CLUSTERDOWN; a node loading its data), logging what it waits for every 5 s while /readyz\nanswers 503; then exit with the last error. 0: exit at once. An unreachable Redis exits at once")
	fs.DurationVar(&c.ShutdownDelay, "shutdown-delay", 0, "on SIGTERM, keep serving this long with /readyz (gateway or admin endpoint) answering 503 before intake stops,\nso a load balancer polling readiness stops sending here first (a second signal ends the wait)")
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
		return fmt.Errorf("--postgres %q is not a PostgreSQL URL: %v", connect.RedactURL(c.Postgres), err)
	}
	rdb, err := connect.NewRedis(c.redisOptions(1))
	if err != nil {
		return err
	}
	rdb.Close() // parsed only: no connection was opened
	if c.ShutdownTimeout <= 0 {
		return fmt.Errorf("--shutdown-timeout %s: want a positive duration", c.ShutdownTimeout)
	}
	if _, err := cli.ParseBytes(c.MemoryLimit); err != nil {
		return fmt.Errorf("--memory-limit %q: %v", c.MemoryLimit, err)
	}
	if c.RedisWait < 0 {
		return fmt.Errorf("--redis-wait %s: want 0 (do not wait) or a positive duration", c.RedisWait)
	}
	if c.ShutdownDelay < 0 || c.ShutdownDelay > maxShutdownDelay {
		return fmt.Errorf("--shutdown-delay %s: want 0 (none) up to %s", c.ShutdownDelay, maxShutdownDelay)
	}
	if c.AdminToken != "" && c.AdminAddr == "" {
		return fmt.Errorf("--admin-token turns on the console on --admin-addr, which is not set: give --admin-addr ADDR")
	}
	roles, _ := c.roles()
	checks := []interface{ Validate() error }{c.Streams, c.Producer, c.Bridge, c.Partition}
	if slices.Contains(roles, roleHTTP) {
		checks = append(checks, c.HTTP)
		if c.HTTP.DeviceAuth != "" && c.MQTT.AuthFile == "" {
			return fmt.Errorf("--http-device-auth %s checks the device credentials of --mqtt-auth, which is not set: give --mqtt-auth FILE or --mqtt-auth postgres", c.HTTP.DeviceAuth)
		}
	}
	if slices.Contains(roles, roleBroker) {
		checks = append(checks, c.MQTT)
	}
	if slices.Contains(roles, roleSubscriber) {
		if c.Subscribe.ClientID == "" {
			c.Subscribe.ClientID = subscriber.DefaultClientID()
		}
		if len(c.Subscribe.Topics) == 0 {
			c.Subscribe.Topics = subscriber.DefaultTopics(c.MQTT.Topic, c.MQTT.Rules, c.MQTT.Sparkplug)
		}
		checks = append(checks, c.Subscribe)
	}
	for _, v := range checks {
		if err := v.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// parseServe parses a command's flags and environment into a config, wired
// but not yet validated.
func parseServe(name, synopsis, about string, args []string, stderr io.Writer, register func(*serveConfig, *flag.FlagSet)) (*serveConfig, error) {
	var cfg serveConfig
	fs := cli.NewFlagSet(name, synopsis, about)
	fs.SetOutput(stderr)
	register(&cfg, fs.FlagSet)
	if err := cfg.parse(fs, name, args); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// parse parses args, the environment and (with --config) the file into c,
// and copies the shared settings into each role's config.
func (c *serveConfig) parse(fs *cli.FlagSet, name string, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("%s takes no arguments, got %q", name, fs.Args())}
	}
	c.Bridge.Postgres = c.Postgres
	c.Bridge.Streams = c.Streams
	c.Bridge.ShutdownTimeout = c.ShutdownTimeout
	c.HTTP.Limits = c.Limits
	c.HTTP.ShutdownTimeout = c.ShutdownTimeout
	c.MQTT.Limits = c.Limits
	c.MQTT.ShutdownTimeout = c.ShutdownTimeout
	c.Subscribe.ShutdownTimeout = c.ShutdownTimeout
	return nil
}

const serveAbout = "Runs firehose's roles in this process until SIGTERM or Ctrl-C, then stops intake, writes what is queued\n" +
	"to Redis, commits what the bridge holds, and exits 0. Settings come from, strongest first, the flags, their\n" +
	"FIREHOSE_* variables, and the YAML file of --config (keys are the flag names: firehose config check FILE)."

// newServeFlags is serve's flag set: every role's flags, --config and the
// configuration file's sections.
func newServeFlags(cfg *serveConfig, stderr io.Writer) *cli.FlagSet {
	return newSettingsFlags("serve", "firehose serve [flags]", serveAbout, cfg, stderr, nil)
}

// newSettingsFlags is the flag set of command name that reads every
// setting serve reads (serve's flags, --config and the file's sections),
// with the command's own flags that more registers.
func newSettingsFlags(name, synopsis, about string, cfg *serveConfig, stderr io.Writer, more func(*cli.FlagSet)) *cli.FlagSet {
	fs := cli.NewFlagSet(name, synopsis, about)
	fs.SetOutput(stderr)
	cfg.registerFlags(fs.FlagSet)
	if more != nil {
		more(fs)
	}
	fs.ConfigFile()
	fs.Lists("roles", "subscribe-broker", "subscribe-topics")
	fs.Section(rulesKey, cfg.decodeRules)
	return fs
}

// loadServe reads serve's settings from args, the environment and the
// configuration file, and validates them without connecting to anything:
// serve and config check share it.
func loadServe(args []string, stderr io.Writer) (*serveConfig, *cli.FlagSet, error) {
	var cfg serveConfig
	fs := newServeFlags(&cfg, stderr)
	if err := cfg.parse(fs, "serve", args); err != nil {
		return nil, nil, err
	}
	err := cfg.validate()
	if err == nil {
		_, err = cli.NewLogger(cfg.LogLevel, cfg.LogFormat, io.Discard)
	}
	if err != nil {
		return nil, nil, usageError{fs.Locate(err)}
	}
	cfg.ConfigFile = fs.ConfigPath()
	cfg.MaxAgeSet = fs.Origin("max-reading-age").Source != cli.FromDefault
	return &cfg, fs, nil
}

func runServe(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, _, err := loadServe(args, stderr)
	if err != nil {
		return err
	}
	logger, err := cli.NewLogger(cfg.LogLevel, cfg.LogFormat, stderr)
	if err != nil {
		return usageError{err}
	}
	if limit, _ := cli.ParseBytes(cfg.MemoryLimit); limit > 0 {
		debug.SetMemoryLimit(limit)
	}
	st, err := startStack(ctx, cfg, logger)
	if err != nil {
		return err
	}
	return st.wait(ctx)
}
