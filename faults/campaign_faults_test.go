package faults

// The campaign's stack and its faults: one seed's own Redis (AOF with
// appendfsync always, or snapshots only), PostgreSQL cluster database, an
// edge (`serve --roles broker,httpgw`) and a bridge, with TCP proxies on the
// edge -> Redis, bridge -> Redis and bridge -> PostgreSQL paths so a fault
// can freeze each; with the subscribed class, a Mosquitto of its own and a
// subscriber (`serve --roles subscriber`) that reads it into the same
// deployment, its Redis path the edge's; with the identity class, a second
// edge (the identity edge: the device registry, client certificates, device
// secrets over HTTP) on the same Redis path, which the edge faults hit with
// the edge. A fault starts before the op the
// schedule names and is healed before the op its length names; what
// happened, and when, is kept for the checker (a Redis restore's loss
// window) and the failure file.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"golang.org/x/crypto/bcrypt"

	"firehose/internal/testcert"
	"firehose/internal/testenv"
	"firehose/registry"
	"firehose/stream"
)

// cEnv is one seed's stack.
type cEnv struct {
	t     *testing.T
	plan  *cPlan
	pg    *PGCluster
	dbURL string // direct, for the checker
	redis *RedisServer
	rdb   *redis.Client // direct, for the checker and SAVE (nil on a cluster)
	uni   redis.UniversalClient
	// cluster is the Redis Cluster of a cluster seed (redis is nil then).
	cluster *testenv.RedisCluster
	shards  int
	prefix  string
	pxER    *tcpProxy // edge -> Redis
	pxBR    *tcpProxy // bridge -> Redis
	pxBPG   *tcpProxy // bridge -> PostgreSQL
	edge    *Stack
	bridge  *Stack
	// ident is the identity class's edge (nil without it), identity its
	// addresses and its devices' credentials; the edge faults hit it too.
	ident    *Stack
	identity *cIdentity
	// identDown counts the identity devices' logins tried and admitted
	// while PostgreSQL was down (identLogins, at each pg-stop).
	identDown cIdentDown
	epoch     atomic.Int64 // Redis restores so far
	// mosq and sub are the subscribed class's Mosquitto and subscriber (nil
	// without it); subDup and subRetried sum, over the subscriber's lives
	// (its counters start again with it), the PUBLISHes Mosquitto resent to
	// it and its store attempts retried.
	mosq               *testenv.Mosquitto
	sub                *Stack
	subDup, subRetried float64
	fences             int

	Injected map[string]int // faults applied, by kind
	Events   []cEvent       // what was done, in order
	Windows  []cWindow      // Redis restores: acked within a window may be lost
	Problems []cViolation   // what the stack did wrong outside the checker's view (a subscriber that never caught up)
	snapAt   time.Time
	victim   *testenv.RedisServer // the cluster primary killed
}

// streams are the seed's shard streams.
func (e *cEnv) streams() stream.Streams { return stream.Streams{Prefix: e.prefix, Count: e.shards} }

// usedMemory is Redis's used_memory, summed over a cluster's nodes.
func (e *cEnv) usedMemory(ctx context.Context) (int64, error) {
	if e.cluster == nil {
		return outUsedMemory(ctx, e.rdb)
	}
	var sum int64
	for _, n := range e.cluster.Nodes {
		c := redis.NewClient(&redis.Options{Addr: n.Addr(), MaxRetries: -1})
		m, err := outUsedMemory(ctx, c)
		c.Close()
		if err != nil {
			return 0, fmt.Errorf("node %s: %w", n.Addr(), err)
		}
		sum += m
	}
	return sum, nil
}

// cEvent is one action of the schedule, as it ran.
type cEvent struct {
	BeforeOp int       `json:"before_op"`
	Action   string    `json:"action"`
	At       time.Time `json:"at"`
}

// cWindow is a span of time in which acknowledged readings may be lost: from
// a snapshot to the kill of the Redis restored from it.
type cWindow struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
}

// cRulesFile is the mapping rules of the campaign, which the edge and the
// bridge run with --config: the mapped topic's, and the typed table
// ctyped's over MQTT (campaign-typed) and over HTTP (campaign-typed-http,
// the same columns; the device is named in the body). The bridge creates
// ctyped at its start (serve: schema.EnsureTables) and keeps its
// partitions.
const cRulesFile = `rules:
  - name: campaign-telemetry
    topic: fac/{site}/{line}/{device_id}/telemetry
    time: t
    time_format: unix_ms
    metrics: ["*"]
    id: msg_id
  - name: campaign-typed
    topic: ctyped/{device_id}/data
    time: t
    time_format: unix_ms
    id: msg_id
    table: ctyped
    columns: &ctyped
      - {name: device_id, type: text, source: device}
      - {name: time, type: timestamptz, source: time}
      - {name: seq, type: bigint, path: seq, required: true}
      - {name: v, type: double precision, path: v}
      - {name: msg_id, type: text, source: id}
    unknown: keep
    indexes: &ctypedIdx
      - {columns: [device_id, time]}
  - name: campaign-typed-http
    endpoint: /v1/readings
    device: device
    time: t
    time_format: unix_ms
    id: msg_id
    table: ctyped
    columns: *ctyped
    unknown: keep
    indexes: *ctypedIdx
`

// startEnv starts the stack of plan on the shared PostgreSQL cluster pg
// (with the identity class, its edge with certs).
func startEnv(t *testing.T, plan *cPlan, pg *PGCluster, certs *cIdentCerts) *cEnv {
	t.Helper()
	e := &cEnv{t: t, plan: plan, pg: pg, Injected: map[string]int{}}
	e.dbURL = pg.CreateDB(fmt.Sprintf("campaign_%d_%d", plan.Seed, time.Now().UnixNano()%1e6))
	e.prefix = fmt.Sprintf("camp%d", plan.Seed)
	e.shards = 4
	common := []string{"--dedup", plan.Dedup}
	var edgeRedis, bridgeRedis string
	switch plan.Persist {
	case "cluster":
		e.cluster = testenv.StartRedisCluster(t, 3, 1, "--appendonly", "yes", "--appendfsync", "always")
		e.uni = e.cluster.Client(t)
		e.shards = 6
		edgeRedis, bridgeRedis = e.cluster.Nodes[0].URL(), e.cluster.Nodes[1].URL()
		common = append(common, "--redis-min-replicas", "1")
	case "rdb":
		e.redis = rrStartRedis(t, "rdb")
	default:
		e.redis = StartRedis(t, true)
	}
	if e.redis != nil {
		e.rdb = rrClient(t, e.redis.URL())
		e.uni = e.rdb
		e.pxER = startTCPProxy(t, fmt.Sprintf("127.0.0.1:%d", e.redis.Port))
		e.pxBR = startTCPProxy(t, fmt.Sprintf("127.0.0.1:%d", e.redis.Port))
		edgeRedis, bridgeRedis = fmt.Sprintf("redis://127.0.0.1:%d/0", e.pxER.Port()), fmt.Sprintf("redis://127.0.0.1:%d/0", e.pxBR.Port())
	}
	e.pxBPG = startTCPProxy(t, fmt.Sprintf("127.0.0.1:%d", pg.Port))
	common = append(common, "--shards", fmt.Sprint(e.shards))

	dir := t.TempDir()
	rules := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rules, []byte(cRulesFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if plan.Retention {
		common = append(common, cRetentionFlags...)
	}
	edgeArgs := append([]string{"--roles", "broker,httpgw", "--config", rules,
		"--max-reading-age", plan.MaxAge.String(), "--default-device-id", "cdefault"}, common...)
	if plan.Auth {
		edgeArgs = append(edgeArgs, "--mqtt-auth", campaignAuthFile(t, dir))
	}
	edgeSvc := Services{Postgres: e.dbURL, Redis: edgeRedis, Prefix: e.prefix}
	e.edge = StartStack(t, edgeSvc, edgeArgs...)

	pgURL := strings.Replace(e.dbURL, fmt.Sprintf(":%d/", pg.Port), fmt.Sprintf(":%d/", e.pxBPG.Port()), 1)
	brSvc := Services{Postgres: pgURL, Redis: bridgeRedis, Prefix: e.prefix}
	// With the rules: the bridge creates their typed table at its start (or
	// its rows would be dead letters of a missing table).
	e.bridge = StartBridge(t, brSvc, append([]string{"--bridge-session-timeout", "10s", "--config", rules}, common...)...)
	e.bridge.WaitReady(60 * time.Second) // migrated and holding its shards before the first fault
	if plan.SubQoS != 0 {
		e.mosq = testenv.StartMosquitto(t)
		e.sub = e.startSubscriber(edgeSvc, append([]string{"--max-reading-age", plan.MaxAge.String()}, common...))
	}
	if slices.Contains(plan.Classes, clsIdentity) {
		// After the bridge's start: it made the registry's table.
		e.startIdentity(certs, edgeSvc, append([]string{"--max-reading-age", plan.MaxAge.String()}, common...))
	}
	return e
}

// cIdentCerts are the identity class's certificates, made once for a
// campaign run with testcert.NewPKI (openssl): a CA, the identity edge's
// server certificate, a client certificate (clientAuth, CN the device id)
// each for ci0.. and for cx0.., the latter revoked in the CRL.
type cIdentCerts struct {
	pki   *testcert.PKI
	roots *x509.CertPool         // the CA, trusted by every client of the identity edge
	certs map[string]*tls.Config // device -> its TLS client configuration
}

func newIdentCerts(t *testing.T) *cIdentCerts {
	t.Helper()
	pki := testcert.NewPKI(t)
	roots := x509.NewCertPool()
	ca, err := os.ReadFile(pki.CA)
	if err != nil || !roots.AppendCertsFromPEM(ca) {
		t.Fatalf("the test CA %s: %v", pki.CA, err)
	}
	c := &cIdentCerts{pki: pki, roots: roots, certs: map[string]*tls.Config{}}
	certify := func(dev string) string {
		certFile, keyFile := pki.Device(dev, testcert.DeviceOptions{})
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatalf("certificate of %s: %v", dev, err)
		}
		c.certs[dev] = &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}}
		return certFile
	}
	for i := range cIdentDevices {
		certify(fmt.Sprintf("ci%d", i))
	}
	for i := range cIdentRevoked {
		pki.Revoke(certify(fmt.Sprintf("cx%d", i)))
	}
	return c
}

// startIdentity provisions the identity class's devices and starts its edge
// (`serve --roles broker,httpgw`, the edge's Redis path, prefix and shards,
// so the same bridge lands what it stores), with extra flags: the device
// registry (--mqtt-auth postgres; registry devices cr0.. added with
// registry.Add, each with a new secret; ci0.. too, for their grants) for
// its plain MQTT listener and, through --http-device-auth mqtt, its
// gateway; client certificates (certs: ci0.., and cx0.. revoked in the CRL)
// on its MQTT TLS listener (--mqtt-tls-client-ca, --mqtt-tls-crl) and on
// its gateway, which serves HTTPS (--http-tls-client-ca, --http-tls-crl:
// a device posts with its certificate or its secret). It reads
// PostgreSQL at start (the registry), and keeps admitting from what it
// loaded while PostgreSQL is down (pg-stop).
func (e *cEnv) startIdentity(certs *cIdentCerts, svc Services, extra []string) {
	t := e.t
	t.Helper()
	pki := certs.pki
	id := &cIdentity{Secrets: map[string]string{}, Certs: certs.certs, clients: map[string]*http.Client{}}
	// An HTTPS client per device: its certificate, or none (a secret).
	tr := func(c *tls.Config) *http.Client {
		hc := &http.Client{Timeout: cOpTimeout, Transport: &http.Transport{TLSClientConfig: c}}
		t.Cleanup(hc.CloseIdleConnections)
		return hc
	}
	id.clients[""] = tr(&tls.Config{RootCAs: certs.roots})
	for dev, c := range certs.certs {
		id.clients[dev] = tr(c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, e.dbURL)
	if err != nil {
		t.Fatalf("provision the registry: %v", err)
	}
	defer conn.Close(context.Background())
	// Every device, certificate ones too, has a read grant on its own
	// commands, which lets it use client ids ID/anything (identLogins'), as
	// in the credentials file of --mqtt-auth; registry devices have a
	// secret each (a certificate device's goes unused).
	for i := range cIdentDevices {
		for _, dev := range []string{fmt.Sprintf("cr%d", i), fmt.Sprintf("ci%d", i)} {
			if id.Secrets[dev], err = registry.Add(ctx, conn, dev, registry.Grants{Read: []string{"devices/" + dev + "/commands"}}); err != nil {
				t.Fatalf("provision the registry: %v", err)
			}
		}
	}
	id.TLS = fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	e.ident = StartStackTLS(t, svc, certs.roots, append([]string{"--roles", "broker,httpgw", "--mqtt-auth", "postgres", "--http-device-auth", "mqtt",
		"--mqtt-tls-addr", id.TLS, "--mqtt-tls-cert", pki.ServerCert, "--mqtt-tls-key", pki.ServerKey,
		"--mqtt-tls-client-ca", pki.CA, "--mqtt-tls-crl", pki.CRL,
		"--http-tls-cert", pki.ServerCert, "--http-tls-key", pki.ServerKey,
		"--http-tls-client-ca", pki.CA, "--http-tls-crl", pki.CRL}, extra...)...)
	id.MQTT, id.HTTP = e.ident.MQTTAddr, e.ident.HTTPAddr
	e.identity = id
}

// identLogins logs each identity device in once at the identity edge as it
// logs in itself (its certificate or its secret; MQTT 3.1.1 or 5), with
// client id ID/login (its read grant allows it) so that no device's own
// connection is taken over, and has each registry device post over HTTP a
// reading without a value (422 once its secret passed: nothing is
// stored). Run while PostgreSQL is stopped (before pg-stop heals): the edge
// admits from the registry it loaded, and a refusal (a CONNACK code, a TLS
// alert, HTTP 401 or 503 "not loaded") is a violation. An answer that does
// not come (cOpTimeout on a loaded box) is only noted.
func (e *cEnv) identLogins() {
	id := e.identity
	client := id.httpClient("")
	admitted, posted := 0, 0
	var refused, unanswered []string
	for i := range cIdentDevices {
		for _, dev := range []string{fmt.Sprintf("ci%d", i), fmt.Sprintf("cr%d", i)} {
			var err error
			if cIdentProto(dev) == 3 {
				var c *c311
				if c, err = dial311As(id.login(dev), dev+"/login"); err == nil {
					c.conn.Close()
				}
			} else {
				var c *paho.Client
				if c, err = dial5As(id.login(dev), dev+"/login", nil); err == nil {
					cClose5(c)
				}
			}
			switch {
			case err == nil:
				admitted++
			case cServerRefused(err):
				refused = append(refused, fmt.Sprintf("%s over MQTT %d: %v", dev, cIdentProto(dev), err))
			default:
				unanswered = append(unanswered, fmt.Sprintf("%s over MQTT: %v", dev, err))
			}
			if cIdentCert(dev) {
				continue
			}
			req, err := http.NewRequest(http.MethodPost, "https://"+id.HTTP+"/v1/readings", strings.NewReader(fmt.Sprintf(`{"device_id":%q}`, dev)))
			if err != nil {
				e.t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			req.SetBasicAuth(dev, id.Secrets[dev])
			resp, err := client.Do(req)
			if err != nil {
				unanswered = append(unanswered, fmt.Sprintf("%s over HTTP: %v", dev, err))
				continue
			}
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			detail := fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b)))
			switch {
			case resp.StatusCode == http.StatusUnprocessableEntity:
				posted++
			case cIdentDenied(resp.StatusCode, detail):
				refused = append(refused, fmt.Sprintf("%s over HTTP: %s", dev, detail))
			default:
				unanswered = append(unanswered, fmt.Sprintf("%s over HTTP: %s", dev, detail))
			}
		}
	}
	d := cIdentDown{Stops: 1, MQTT: admitted, MQTTTried: 2 * cIdentDevices, HTTP: posted, HTTPTried: cIdentDevices}
	e.identDown.add(d)
	e.Events = append(e.Events, cEvent{Action: "identity logins while PostgreSQL is down: " + d.String() + "; not answered: " + cJoinOr(unanswered, "none"), At: time.Now()})
	if len(refused) > 0 {
		e.Problems = append(e.Problems, cViolation{Invariant: "the identity edge admits the devices it loaded",
			Detail: "while PostgreSQL was down: " + strings.Join(refused, "; ")})
	}
}

// cIdentDown counts identity logins tried while PostgreSQL was down, over
// Stops pg-stops: MQTT logins admitted, HTTP secrets taken.
type cIdentDown struct {
	Stops, MQTT, MQTTTried, HTTP, HTTPTried int
}

func (d *cIdentDown) add(o cIdentDown) {
	d.Stops, d.MQTT, d.MQTTTried, d.HTTP, d.HTTPTried = d.Stops+o.Stops, d.MQTT+o.MQTT, d.MQTTTried+o.MQTTTried, d.HTTP+o.HTTP, d.HTTPTried+o.HTTPTried
}

func (d cIdentDown) String() string {
	return fmt.Sprintf("%d of %d MQTT logins admitted, %d of %d HTTP secrets taken", d.MQTT, d.MQTTTried, d.HTTP, d.HTTPTried)
}

// edges are the stack's edges: the edge, and the identity edge with its class.
func (e *cEnv) edges() []*Stack {
	if e.ident == nil {
		return []*Stack{e.edge}
	}
	return []*Stack{e.edge, e.ident}
}

// Settings of the subscribed class: the subscriber reads csub/{device_id}/readings
// as firehose's broker reads its readings topic (--mqtt-topic: the level
// names the device), with a client id of its own for its persistent
// session at Mosquitto.
const (
	cSubTemplate = "csub/{device_id}/readings"
	cSubFilter   = "csub/+/readings"
	cSubClientID = "campaign-subscriber"
	// cFenceDevice publishes the fences (subFence): its rows are not judged.
	cFenceDevice = "cfence"
)

// startSubscriber runs `serve --roles subscriber` against svc (the edge's
// Redis path, prefix and shards: the bridge lands what it stores), with
// extra flags, subscribed to the seed's Mosquitto at the seed's QoS and
// the default Receive Maximum (1000), and waits until it is ready.
func (e *cEnv) startSubscriber(svc Services, extra []string) *Stack {
	t := e.t
	t.Helper()
	admin := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	s := &Stack{t: t, Services: svc, HTTPAddr: admin, MQTTAddr: e.mosq.Addr()} // HTTPAddr: /metrics, /readyz
	s.Args = append([]string{"serve", "--roles", "subscriber",
		"--postgres", svc.Postgres, "--redis", svc.Redis, "--redis-prefix", svc.Prefix,
		"--admin-addr", admin, "--log-level", "warn", "--mqtt-topic", cSubTemplate,
		"--subscribe-broker", e.mosq.URL(), "--subscribe-topics", cSubFilter,
		"--subscribe-client-id", cSubClientID, "--subscribe-qos", strconv.Itoa(e.plan.SubQoS)}, extra...)
	s.start()
	return s
}

// subCount adds the live subscriber's resends and retries to e.subDup and
// e.subRetried (before it is killed, and before it stops).
func (e *cEnv) subCount() {
	dup, ok1 := outMetricSum(e.sub, "firehose_subscriber_redeliveries_total")
	retried, ok2 := outMetricSum(e.sub, "firehose_subscriber_store_retries_total")
	if !ok1 || !ok2 {
		e.Events = append(e.Events, cEvent{Action: "the subscriber's metrics could not be read: its resends are not counted", At: time.Now()})
	}
	e.subDup += dup
	e.subRetried += retried
}

// subFence publishes a fence to Mosquitto (QoS 1, again until acked) and
// waits until the bridge has landed it. Mosquitto sends a session's
// messages in order and the subscriber acknowledges them in order, each
// once stored: when the fence has landed, every message Mosquitto took
// before it is stored too (or was lost). The wait has no bound of its own
// (the test's deadline, less a margin for the check); past it, the error.
func (e *cEnv) subFence() error {
	e.fences++
	tag := fmt.Sprintf("fence-%d", e.fences)
	deadline := time.Now().Add(10 * time.Minute)
	if dl, ok := e.t.Deadline(); ok {
		deadline = dl.Add(-90 * time.Second)
	}
	up := cTargets{MQTT: e.mosq.Addr()}
	acked := false
	for {
		if !acked {
			if c, err := dial5(up, cFenceDevice, cFenceDevice, nil); err == nil {
				out, _, _ := publish5(c, cSubTopic(cFenceDevice), 1, []byte(fmt.Sprintf(`{"reading":%d,"cid":%q}`, e.fences, tag)))
				cClose5(c)
				acked = out == ansAcked
			}
		}
		if acked {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			var n int64
			err := cRetry(ctx, func(ctx context.Context) error {
				conn, err := pgx.Connect(ctx, e.dbURL)
				if err != nil {
					return err
				}
				defer conn.Close(context.Background())
				return conn.QueryRow(ctx, `SELECT count(*) FROM readings WHERE device_id = $1 AND payload->>'cid' = $2`, cFenceDevice, tag).Scan(&n)
			})
			cancel()
			if err == nil && n > 0 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("fence %s (acked by Mosquitto: %v) not landed after the test's time ran out; subscriber output: %s", tag, acked, cTail(e.sub.Proc.Output()))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// revive starts again a process of the stack that exited by itself (not by
// a fault): the check needs a bridge to drain; it is reported as a
// violation by the caller.
func (e *cEnv) revive() (exited []string) {
	if e.ident != nil && e.ident.Proc.Exited() {
		exited = append(exited, "identity edge: "+cTail(e.ident.Proc.Output())) // the drain does not need it
	}
	if e.bridge.Proc.Exited() {
		exited = append(exited, "bridge: "+cTail(e.bridge.Proc.Output()))
		e.bridge.Proc = StartProc(e.t, "bridge", binary, e.bridge.Args...)
	}
	if e.sub != nil && e.sub.Proc.Exited() {
		exited = append(exited, "subscriber: "+cTail(e.sub.Proc.Output()))
		e.sub.Restart() // to take what Mosquitto holds for it
	}
	return exited
}

// cTail is the end of a process's output.
func cTail(s string) string {
	if len(s) > 2000 {
		s = "..." + s[len(s)-2000:]
	}
	return s
}

// cRetentionFlags are the serve flags of the retention class: --retention 3d
// with the default 1d partition interval, so the edges accept readings up to
// 2d old (the retention minus one interval) and the edge's explicit
// --max-reading-age is cRetentionMaxAge, that bound (serve refuses one
// beyond it at start). The class's readings lie within an hour either side.
var cRetentionFlags = []string{"--retention", "3d"}

// campaignAuthFile writes the --mqtt-auth file: every device with password
// pw-ID and a read grant on its own commands (which also lets it use client
// ids ID/anything, for its MQTT 5 and subscriber connections); every
// Sparkplug edge node (e0.., x1..) with a sparkplug=cg field and nothing
// else; the observer, who may read the host's STATE and the group no node
// names. Nobody has a write= grant.
func campaignAuthFile(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	for i := range cDevices {
		d := fmt.Sprintf("cd%d", i)
		h, err := bcrypt.GenerateFromPassword([]byte(cPassword(d)), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s %s read=devices/%s/commands\n", d, h, d)
	}
	var nodes []string
	for i := range cEdgeNodes {
		nodes = append(nodes, fmt.Sprintf("e%d", i))
	}
	for i := range cEarlyNodes {
		nodes = append(nodes, fmt.Sprintf("x%d", i+1))
	}
	for _, n := range append(nodes, cObserver) {
		h, err := bcrypt.GenerateFromPassword([]byte(cPassword(n)), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		fields := "sparkplug=" + cSpbGroup
		if n == cObserver {
			fields = "read=spBv1.0/STATE/# read=spBv1.0/" + cOtherGroup + "/#"
		}
		fmt.Fprintf(&b, "%s %s %s\n", n, h, fields)
	}
	path := filepath.Join(dir, "devices.txt")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// cStep is one action at an op index.
type cStep struct {
	before  int
	action  string // "<kind>" to inject, "heal <kind>", "save", "restore-kill"
	quiesce bool   // wait for every op in flight first
}

// steps turns the schedule into actions by op index, in order.
func (e *cEnv) steps() []cStep {
	var out []cStep
	for _, f := range e.plan.Faults {
		if f.Kind == fRedisRestore {
			out = append(out, cStep{before: f.At, action: "save", quiesce: true},
				cStep{before: f.At + f.Len/2, action: fRedisRestore},
				cStep{before: f.At + f.Len, action: "heal " + fRedisRestore})
			continue
		}
		out = append(out, cStep{before: f.At, action: f.Kind}, cStep{before: f.At + f.Len, action: "heal " + f.Kind})
	}
	return out
}

// apply runs one step (from the test's goroutine).
func (e *cEnv) apply(s cStep) {
	t := e.t
	t.Helper()
	switch s.action {
	case fEdgeKill:
		for _, s := range e.edges() {
			s.Proc.Kill()
		}
	case "heal " + fEdgeKill:
		// Both start at once, then each is waited for.
		for _, s := range e.edges() {
			s.Proc = StartProc(t, "firehose serve", binary, s.Args...)
		}
		for _, s := range e.edges() {
			s.WaitReady(20 * time.Second)
		}
	case fEdgeStop:
		for _, s := range e.edges() {
			s.Proc.Signal(syscall.SIGSTOP)
		}
	case "heal " + fEdgeStop:
		for _, s := range e.edges() {
			s.Proc.Signal(syscall.SIGCONT)
		}
	case fBridgeKill:
		e.bridge.Proc.Kill()
	case "heal " + fBridgeKill:
		// Started, and ready (migrated, shards held) before the next fault:
		// a bridge that exits while applying the schema is not this fault.
		e.bridge.Proc = StartProc(t, "bridge", binary, e.bridge.Args...)
		e.bridge.WaitReady(60 * time.Second)
	case fBridgeStop:
		e.bridge.Proc.Signal(syscall.SIGSTOP)
	case "heal " + fBridgeStop:
		e.bridge.Proc.Signal(syscall.SIGCONT)
	case fRedisKill:
		e.redis.Kill()
	case "heal " + fRedisKill:
		e.redis.Start()
	case "save":
		if e.sub != nil {
			// What Mosquitto acknowledged before the snapshot is in Redis
			// before it, as what the edge acknowledged is: the restore's
			// loss window is the same for both.
			if err := e.subFence(); err != nil {
				e.Problems = append(e.Problems, cViolation{Invariant: "the subscriber takes what Mosquitto holds", Detail: "before the snapshot: " + err.Error()})
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := e.rdb.Save(ctx).Err(); err != nil {
			t.Fatalf("SAVE: %v", err)
		}
		cancel()
		e.snapAt = time.Now()
		if err := cCopyFile(filepath.Join(e.redis.Dir, "dump.rdb"), filepath.Join(e.redis.Dir, "snapshot.rdb")); err != nil {
			t.Fatal(err)
		}
	case fRedisRestore:
		e.redis.Kill()
		e.Windows = append(e.Windows, cWindow{From: e.snapAt, To: time.Now()})
		if err := cCopyFile(filepath.Join(e.redis.Dir, "snapshot.rdb"), filepath.Join(e.redis.Dir, "dump.rdb")); err != nil {
			t.Fatal(err)
		}
	case "heal " + fRedisRestore:
		e.redis.Start()
		e.epoch.Add(1) // Sparkplug births made after the snapshot are gone: nodes birth again
	case fClusterFail:
		e.victim = e.cluster.PrimaryOf(t, e.streams().Key(0))
		e.victim.Kill()
	case "heal " + fClusterFail:
		outWaitFor(t, time.Minute, "the cluster did not promote the killed primary's replica", func() (bool, string) {
			return e.cluster.PrimaryOf(t, e.streams().Key(0)) != e.victim, "shard 0's primary is the killed node"
		})
		e.victim.Restart(t) // rejoins as the promoted replica's replica
		e.epoch.Add(1)      // Sparkplug state is written without WAIT: nodes birth again
	case fPGStop:
		e.pg.Stop()
	case "heal " + fPGStop:
		if e.ident != nil {
			e.identLogins()
		}
		e.pg.Start()
	case fFreezeEdgeR:
		e.pxER.Freeze()
	case "heal " + fFreezeEdgeR:
		campaignThaw(e.pxER)
	case fFreezeBrR:
		e.pxBR.Freeze()
	case "heal " + fFreezeBrR:
		campaignThaw(e.pxBR)
	case fFreezeBrPG:
		e.pxBPG.Freeze()
	case "heal " + fFreezeBrPG:
		campaignThaw(e.pxBPG)
	case fSubKill:
		e.subCount()
		e.sub.Proc.Kill()
	case "heal " + fSubKill:
		e.sub.Restart() // same client id: its session at Mosquitto resumes
	case fSubStop:
		e.sub.Proc.Signal(syscall.SIGSTOP)
	case "heal " + fSubStop:
		e.sub.Proc.Signal(syscall.SIGCONT)
	case fMosqRestart:
		e.mosq.Stop() // SIGTERM: it saves its persistence file
	case "heal " + fMosqRestart:
		e.mosq.Start(t)
	default:
		t.Fatalf("campaign: unknown step %q", s.action)
	}
	if !strings.HasPrefix(s.action, "heal ") && s.action != "save" {
		e.Injected[s.action]++
	}
	e.Events = append(e.Events, cEvent{BeforeOp: s.before, Action: s.action, At: time.Now()})
}

// campaignThaw lets a frozen proxy forward again.
func campaignThaw(p *tcpProxy) {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.thawed:
	default:
		close(p.thawed)
	}
}

func cCopyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return fmt.Errorf("copy %s: %w", from, err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		return fmt.Errorf("copy to %s: %w", to, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s to %s: %w", from, to, err)
	}
	return out.Close()
}
