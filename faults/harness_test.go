package faults

// The harness every scenario shares: the firehose binary, its processes,
// throwaway Redis and PostgreSQL servers the tests may kill, the simulated
// load, and the record of results RELIABILITY.md is made from.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"firehose/internal/syncbuf"
	"firehose/internal/testenv"
	"firehose/simulator"
)

// binary is the firehose built once for the suite.
var binary string

func TestMain(m *testing.M) { testenv.RunWithFirehose(m, "../cmd/firehose", &binary) }

// Long reports whether the long form of the suite runs (make faults sets
// FIREHOSE_FAULTS=long); the short form runs in make test.
func Long() bool { return os.Getenv("FIREHOSE_FAULTS") == "long" }

// scale picks the short or the long value.
func scale[T any](short, long T) T {
	if Long() {
		return long
	}
	return short
}

// skipShort skips t under -short: every scenario needs the real services.
func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("fault scenario: skipped under -short")
	}
}

// FreePort returns a loopback port that is free now and outside the
// kernel's ephemeral range (testenv.FreePort: an outgoing connection cannot
// take it before the server binds it).
func FreePort(t testing.TB) int {
	t.Helper()
	return testenv.FreePort(t)
}

// Proc is a process a test started and owns: it is killed when the test ends.
type Proc struct {
	t      testing.TB
	name   string
	cmd    *exec.Cmd
	out    *syncbuf.Buffer
	done   chan struct{}
	exited error
}

// StartProc starts a command with the test's environment minus FIREHOSE_
// variables; its output is kept for failure messages.
func StartProc(t testing.TB, name string, path string, args ...string) *Proc {
	t.Helper()
	cmd := exec.Command(path, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FIREHOSE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	p := &Proc{t: t, name: name, cmd: cmd, out: &syncbuf.Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.exited = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
	})
	return p
}

// Output is what the process printed so far.
func (p *Proc) Output() string { return p.out.String() }

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) { _ = p.cmd.Process.Signal(sig) }

// Kill sends SIGKILL and waits for the process to go.
func (p *Proc) Kill() {
	p.Signal(syscall.SIGKILL)
	<-p.done
}

// Wait waits up to timeout for the process to exit and returns its exit code
// (-1 when killed by a signal); ok is false when it is still running.
func (p *Proc) Wait(timeout time.Duration) (code int, ok bool) {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode(), true
	case <-time.After(timeout):
		return 0, false
	}
}

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Services are the PostgreSQL database and Redis a stack uses.
type Services struct {
	Postgres string // URL of the stack's database, migrated
	Redis    string // URL of the Redis server
	Prefix   string // Redis key prefix of the deployment
}

// SharedServices gives the test its own database and key prefix on the
// machine's PostgreSQL and Redis (removed when the test ends).
func SharedServices(t *testing.T) Services {
	t.Helper()
	pg := testenv.Postgres(t)
	_, prefix := testenv.Redis(t)
	return Services{Postgres: pg, Redis: testenv.RedisURL(), Prefix: prefix}
}

// OwnServices gives the test its own database on the machine's PostgreSQL
// (removed when the test ends) and a fresh key prefix on redisURL, a Redis
// of the test's own.
func OwnServices(t *testing.T, redisURL string) Services {
	t.Helper()
	return Services{Postgres: testenv.Postgres(t), Redis: redisURL, Prefix: "fhtest-" + testenv.ID()}
}

// Stack is a running `firehose serve`.
type Stack struct {
	t        *testing.T
	Services Services
	HTTPAddr string // host:port of the gateway ("" without the httpgw role)
	MQTTAddr string // host:port of the broker ("" without the broker role)
	Args     []string
	Proc     *Proc
	// httpc reaches a gateway that serves HTTPS (StartStackTLS); nil: plain
	// HTTP with http.DefaultClient.
	httpc *http.Client
}

// HTTP is the gateway's base URL.
func (s *Stack) HTTP() string {
	if s.httpc != nil {
		return "https://" + s.HTTPAddr
	}
	return "http://" + s.HTTPAddr
}

// client is what the test reaches the gateway's probes and metrics with.
func (s *Stack) client() *http.Client {
	if s.httpc != nil {
		return s.httpc
	}
	return http.DefaultClient
}

// MQTT is the broker's URL.
func (s *Stack) MQTT() string { return "tcp://" + s.MQTTAddr }

// StartStack runs `firehose serve` with every role on free loopback ports
// against svc, with extra flags appended (they win over the defaults here),
// and waits until it is ready.
func StartStack(t *testing.T, svc Services, extra ...string) *Stack {
	t.Helper()
	return startStack(t, svc, nil, extra...)
}

// StartStackTLS is StartStack for a gateway serving HTTPS (extra has its
// --http-tls-cert and --http-tls-key): the test reaches its probes and
// metrics trusting roots, without a client certificate.
func StartStackTLS(t *testing.T, svc Services, roots *x509.CertPool, extra ...string) *Stack {
	t.Helper()
	httpc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	t.Cleanup(httpc.CloseIdleConnections)
	return startStack(t, svc, httpc, extra...)
}

func startStack(t *testing.T, svc Services, httpc *http.Client, extra ...string) *Stack {
	t.Helper()
	s := &Stack{t: t, Services: svc, httpc: httpc,
		HTTPAddr: fmt.Sprintf("127.0.0.1:%d", FreePort(t)),
		MQTTAddr: fmt.Sprintf("127.0.0.1:%d", FreePort(t)),
	}
	s.Args = append([]string{"serve",
		"--postgres", svc.Postgres, "--redis", svc.Redis, "--redis-prefix", svc.Prefix,
		"--http-addr", s.HTTPAddr, "--mqtt-addr", s.MQTTAddr,
		"--batch-age", "50ms", "--log-level", "warn"}, extra...)
	s.start()
	return s
}

// StartBridge runs `firehose serve --roles bridge` against svc with extra
// flags, with an admin endpoint for its metrics; it does not wait.
func StartBridge(t *testing.T, svc Services, extra ...string) *Stack {
	t.Helper()
	s := &Stack{t: t, Services: svc}
	admin := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	s.HTTPAddr = admin // /metrics, /readyz
	s.Args = append([]string{"serve", "--roles", "bridge",
		"--postgres", svc.Postgres, "--redis", svc.Redis, "--redis-prefix", svc.Prefix,
		"--admin-addr", admin, "--batch-age", "50ms", "--lock-retry", "200ms", "--log-level", "warn"}, extra...)
	s.Proc = StartProc(t, "bridge", binary, s.Args...)
	return s
}

func (s *Stack) start() {
	s.t.Helper()
	s.Proc = StartProc(s.t, "firehose serve", binary, s.Args...)
	s.WaitReady(20 * time.Second)
}

// WaitReady waits until /readyz answers 200.
func (s *Stack) WaitReady(timeout time.Duration) {
	s.t.Helper()
	testenv.Eventually(s.t, timeout, func() bool {
		if s.Proc.Exited() {
			s.t.Fatalf("firehose exited during start-up: %s", s.Proc.Output())
		}
		resp, err := s.client().Get(s.HTTP() + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "firehose not ready at %s; output: %s", s.HTTP(), s.Proc.Output())
}

// Restart starts the same command again (after a kill or stop).
func (s *Stack) Restart() {
	s.t.Helper()
	if !s.Proc.Exited() {
		s.Proc.Kill()
	}
	s.start()
}

// Stop sends SIGTERM and requires exit code 0 within timeout.
func (s *Stack) Stop(timeout time.Duration) {
	s.t.Helper()
	s.Proc.Signal(syscall.SIGTERM)
	code, ok := s.Proc.Wait(timeout)
	if !ok || code != 0 {
		s.t.Fatalf("after SIGTERM: exited %v with code %d (want 0 within %s); output: %s", ok, code, timeout, s.Proc.Output())
	}
}

// Metric reads one unlabelled sample (or the first matching line for a
// name with labels, e.g. `x{reason="invalid"}`) from the stack's /metrics.
func (s *Stack) Metric(name string) (float64, bool) {
	resp, err := s.client().Get(s.HTTP() + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	for _, line := range strings.Split(buf.String(), "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}

// RedisServer is a redis-server a test owns and may kill, pause and restart
// on the same port and data directory.
type RedisServer struct {
	t    *testing.T
	Port int
	Dir  string
	args []string
	proc *Proc
}

// StartRedis starts a redis-server on a free loopback port. With always,
// every write is fsynced before Redis answers (appendfsync always), so an
// acknowledged entry survives a kill; otherwise AOF everysec. Extra
// arguments follow (e.g. "--replicaof", host, port).
func StartRedis(t *testing.T, always bool, extra ...string) *RedisServer {
	t.Helper()
	r := &RedisServer{t: t, Port: FreePort(t), Dir: t.TempDir()}
	fsync := "everysec"
	if always {
		fsync = "always"
	}
	r.args = append([]string{"--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1", "--dir", r.Dir,
		"--save", "", "--appendonly", "yes", "--appendfsync", fsync, "--daemonize", "no", "--logfile", ""}, extra...)
	r.Start()
	return r
}

// URL is the server's Redis URL.
func (r *RedisServer) URL() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", r.Port) }

// Start (re)starts the server and waits until it answers.
func (r *RedisServer) Start() {
	r.t.Helper()
	r.proc = StartProc(r.t, "redis-server", "redis-server", r.args...)
	testenv.Eventually(r.t, 10*time.Second, func() bool {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", r.Port))
		if err != nil {
			return false
		}
		defer c.Close()
		_, _ = c.Write([]byte("PING\r\n"))
		b := make([]byte, 7)
		n, _ := c.Read(b)
		return strings.HasPrefix(string(b[:n]), "+PONG")
	}, "redis-server did not start on port %d: %s", r.Port, r.proc.Output())
}

// Kill kills the server with SIGKILL.
func (r *RedisServer) Kill() { r.proc.Kill() }

// Pause stops the server with SIGSTOP (connections stay open, nothing is
// answered); Resume continues it.
func (r *RedisServer) Pause()  { r.proc.Signal(syscall.SIGSTOP) }
func (r *RedisServer) Resume() { r.proc.Signal(syscall.SIGCONT) }

// Pid is the server's process id (for RSS and the like).
func (r *RedisServer) Pid() int { return r.proc.Pid() }

// PGCluster is a PostgreSQL cluster a test owns (initdb into a temp dir, its
// own port, trust auth) and may stop and start.
type PGCluster struct {
	t    *testing.T
	Port int
	Dir  string
	bin  string
	as   []string // runuser prefix when running as root
}

// StartPGCluster creates and starts a throwaway cluster. PostgreSQL refuses
// to run as root, so as root it runs as the postgres user.
func StartPGCluster(t *testing.T) *PGCluster {
	t.Helper()
	bin := pgBinDir(t)
	c := &PGCluster{t: t, Port: FreePort(t), bin: bin}
	base, err := os.MkdirTemp("", "firehose-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	c.Dir = filepath.Join(base, "data")
	me, _ := user.Current()
	superuser := "root"
	if me != nil {
		superuser = me.Username
	}
	if os.Geteuid() == 0 {
		c.as = []string{"runuser", "-u", "postgres", "--"}
		if out, err := exec.Command("chown", "postgres", base).CombinedOutput(); err != nil {
			t.Fatalf("chown %s: %v: %s", base, err, out)
		}
	}
	c.run("initdb", "-D", c.Dir, "-A", "trust", "-U", superuser, "--no-sync", "-E", "UTF8")
	conf := fmt.Sprintf("port = %d\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\nfsync = on\nmax_connections = 50\n", c.Port, base)
	f, err := os.OpenFile(filepath.Join(c.Dir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString(conf)
	f.Close()
	c.Start()
	t.Cleanup(func() { _ = c.exec("pg_ctl", "-D", c.Dir, "-m", "immediate", "-w", "stop") })
	return c
}

func pgBinDir(t *testing.T) string {
	t.Helper()
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if d := strings.TrimSpace(string(out)); fileExists(filepath.Join(d, "initdb")) {
			return d
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(matches) == 0 {
		t.Skip("initdb not found: install PostgreSQL's server package to run this scenario")
	}
	return filepath.Dir(matches[len(matches)-1])
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func (c *PGCluster) exec(tool string, args ...string) error {
	full := append(append(append([]string{}, c.as...), filepath.Join(c.bin, tool)), args...)
	cmd := exec.Command(full[0], full[1:]...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", tool, strings.Join(args, " "), err, out)
	}
	return nil
}

func (c *PGCluster) run(tool string, args ...string) {
	c.t.Helper()
	if err := c.exec(tool, args...); err != nil {
		c.t.Fatal(err)
	}
}

// Start starts the cluster and waits until it accepts connections.
func (c *PGCluster) Start() {
	c.t.Helper()
	c.run("pg_ctl", "-D", c.Dir, "-l", filepath.Join(filepath.Dir(c.Dir), "log"), "-w", "-t", "30", "start")
}

// Stop stops the cluster at once (immediate: as a crash would, from the
// clients' point of view).
func (c *PGCluster) Stop() {
	c.t.Helper()
	c.run("pg_ctl", "-D", c.Dir, "-m", "immediate", "-w", "stop")
}

// URL is the URL of database db on the cluster.
func (c *PGCluster) URL(db string) string {
	return fmt.Sprintf("postgres://127.0.0.1:%d/%s?sslmode=disable", c.Port, db)
}

// CreateDB creates database db (migrations are applied by firehose serve).
func (c *PGCluster) CreateDB(db string) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		c.t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{db}.Sanitize()); err != nil {
		c.t.Fatal(err)
	}
	return c.URL(db)
}

// Load is a `firehose simulate` run against a stack.
type Load struct {
	t      *testing.T
	proc   *Proc
	report string
	Args   []string
}

// LoadOpts shapes the simulated fleet. Zero fields take the defaults: 200
// devices, mixed HTTP and MQTT QoS 1, open loop at 2,000 readings/s, 10 s.
type LoadOpts struct {
	Devices  int
	Protocol string  // http, mqtt, mixed
	QoS      int     // MQTT QoS
	Rate     float64 // readings/s; 0 means the default; use Closed for closed loop
	Closed   bool
	Duration time.Duration
	Extra    []string // more simulate flags
}

// StartLoad runs the simulator against s in the background; Wait collects
// its report. Devices are verified in s's database.
func StartLoad(t *testing.T, s *Stack, o LoadOpts) *Load {
	t.Helper()
	if o.Devices == 0 {
		o.Devices = 200
	}
	if o.Protocol == "" {
		o.Protocol = "mixed"
	}
	if o.QoS == 0 {
		o.QoS = 1
	}
	if o.Rate == 0 {
		o.Rate = 2000
	}
	if o.Closed {
		o.Rate = 0
	}
	if o.Duration == 0 {
		o.Duration = 10 * time.Second
	}
	dir := t.TempDir()
	args := []string{"simulate",
		"--http", s.HTTP(), "--mqtt", s.MQTT(), "--postgres", s.Services.Postgres,
		"--metrics", s.HTTP() + "/metrics",
		"--devices", strconv.Itoa(o.Devices), "--protocol", o.Protocol, "--qos", strconv.Itoa(o.QoS),
		"--rate", strconv.FormatFloat(o.Rate, 'f', -1, 64), "--duration", o.Duration.String(),
		"--max-attempts", "100", "--timeout", "5s", "--land-timeout", "180s",
		"--report", dir}
	args = append(args, o.Extra...)
	return &Load{t: t, proc: StartProc(t, "firehose simulate", binary, args...), report: dir, Args: args}
}

// Wait waits for the run to end (bounded) and returns its report. The exit
// code is not judged here: Assert does that from the report.
func (l *Load) Wait(timeout time.Duration) *simulator.Report {
	l.t.Helper()
	if _, ok := l.proc.Wait(timeout); !ok {
		l.proc.Kill()
		l.t.Fatalf("firehose simulate still running after %s; output: %s", timeout, l.proc.Output())
	}
	data, err := os.ReadFile(filepath.Join(l.report, "report.json"))
	if err != nil {
		l.t.Fatalf("read the simulator's report: %v; output: %s", err, l.proc.Output())
	}
	var rep simulator.Report
	if err := json.Unmarshal(data, &rep); err != nil {
		l.t.Fatalf("parse report.json: %v", err)
	}
	return &rep
}

// Output is what the simulator printed.
func (l *Load) Output() string { return l.proc.Output() }

// AssertExactlyOnce fails t unless every acknowledged reading of the run
// landed, none acknowledged once landed twice, and something was acknowledged.
func AssertExactlyOnce(t *testing.T, rep *simulator.Report, l *Load) {
	t.Helper()
	switch {
	case rep.Landing == nil:
		t.Fatalf("the run was not verified; simulator output:\n%s", l.Output())
	case rep.Send.Acked == 0:
		t.Fatalf("nothing was acknowledged; simulator output:\n%s", l.Output())
	case rep.Landing.Missing != 0 || rep.Landing.DupOnceAcked != 0:
		t.Fatalf("exactly-once violated: %d acknowledged readings missing (e.g. %v), %d once-acknowledged readings duplicated (e.g. %v); simulator output:\n%s",
			rep.Landing.Missing, rep.Landing.MissingSample, rep.Landing.DupOnceAcked, rep.Landing.DupOnceAckedSample, l.Output())
	}
}

// WaitLandedOnce waits for the load l and checks what landed of it in
// svc's database: every acknowledged reading exactly once
// (AssertExactlyOnce), and no stream entry committed twice
// (outSameEntryTwice). It returns the report and the extra rows of readings
// that landed more than once, by protocol: resends, which are allowed.
func WaitLandedOnce(t *testing.T, svc Services, l *Load) (rep *simulator.Report, dupMQTT, dupHTTP int64) {
	t.Helper()
	rep = l.Wait(5 * time.Minute)
	AssertExactlyOnce(t, rep, l)
	if n := outSameEntryTwice(t, svc.Postgres, rep.DevicePrefix); n != 0 {
		t.Errorf("%d readings landed twice from one stream entry (same received_at): the bridge committed an entry twice", n)
	}
	dupMQTT, dupHTTP = outDupsByProtocol(t, svc.Postgres, rep.DevicePrefix)
	return rep, dupMQTT, dupHTTP
}

// Result is one scenario's line in RELIABILITY.md.
type Result struct {
	Scenario     string `json:"scenario"`
	Load         string `json:"load"`
	Faults       string `json:"faults"`
	Acked        int64  `json:"acked"`
	Landed       int64  `json:"landed"`
	Lost         int64  `json:"lost"`
	DupOnceAcked int64  `json:"dup_once_acked"`
	DupResend    int64  `json:"dup_after_resend"`
	Refused      int64  `json:"refused"`
	Notes        string `json:"notes,omitempty"`
	Command      string `json:"command"`
	Long         bool   `json:"long"`
}

var recordMu sync.Mutex

// Record appends r to the file named by FIREHOSE_FAULTS_RESULTS (make faults
// sets it) and logs it; without the variable it only logs.
func Record(t *testing.T, r Result) {
	t.Helper()
	r.Long = Long()
	if r.Command == "" {
		r.Command = fmt.Sprintf("FIREHOSE_FAULTS=%s go test -run '^%s$' ./faults/", scale("short", "long"), t.Name())
	}
	line, _ := json.Marshal(r)
	t.Logf("result: %s", line)
	path := os.Getenv("FIREHOSE_FAULTS_RESULTS")
	if path == "" {
		return
	}
	recordMu.Lock()
	defer recordMu.Unlock()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Errorf("record result: %v", err)
		return
	}
	defer f.Close()
	_, _ = f.Write(append(line, '\n'))
}

// ResultOf fills a Result's counts from a simulator report.
func ResultOf(rep *simulator.Report) Result {
	r := Result{Acked: rep.Send.Acked, Refused: rep.Send.Refused}
	if rep.Landing != nil {
		r.Landed = rep.Landing.Readings
		r.Lost = rep.Landing.Missing
		r.DupOnceAcked = rep.Landing.DupOnceAcked
		r.DupResend = rep.Landing.DupAfterResend
	}
	return r
}

// LoadDesc describes the load of a run for RELIABILITY.md.
func LoadDesc(rep *simulator.Report) string {
	c := rep.Config
	loop := fmt.Sprintf("%.0f/s open loop", c.RatePerS)
	if c.Loop == "closed" {
		loop = "closed loop"
	}
	d := c.DurationS
	if rep.Interrupted { // stopped by the test (Load.Interrupt): as long as it sent
		d = rep.Send.SendS
	}
	return fmt.Sprintf("%d devices (%d HTTP, %d MQTT QoS %d), %s, %.0fs", c.Devices, c.HTTPDevices, c.MQTTDevices, c.QoS, loop, d)
}

// dbConn connects to dbURL for one check that must finish within timeout;
// done closes the connection.
func dbConn(t *testing.T, dbURL string, timeout time.Duration) (ctx context.Context, conn *pgx.Conn, done func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	return ctx, conn, func() {
		conn.Close(context.Background())
		cancel()
	}
}

// QueryInt runs a query returning one integer against url, retrying
// transient failures (PostgreSQL starting up, a dropped connection: see
// testenv.TransientPG).
func QueryInt(t *testing.T, dbURL, query string, args ...any) int64 {
	t.Helper()
	return testenv.QueryInt(t, dbURL, query, args...)
}

// RSS is a process's resident set size in bytes (from /proc).
func RSS(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

// dbName returns the database name of a PostgreSQL URL.
func dbName(dbURL string) string {
	u, err := url.Parse(dbURL)
	if err != nil {
		return ""
	}
	return strings.TrimPrefix(u.Path, "/")
}

var _ = dbName
