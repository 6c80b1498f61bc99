package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"gopkg.in/yaml.v3"

	"firehose/internal/cli"
	"firehose/internal/syncbuf"
	"firehose/internal/testenv"
)

// binary is the firehose built once for the tests that run it as a process.
var binary string

func TestMain(m *testing.M) { testenv.RunWithFirehose(m, ".", &binary) }

// proc is a firehose process started by a test.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stderr *syncbuf.Buffer
	done   chan struct{}
}

func start(t *testing.T, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = cleanEnv()
	p := &proc{t: t, cmd: cmd, stderr: &syncbuf.Buffer{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	cmd.Stdout = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
	})
	return p
}

// cleanEnv is the test's environment without FIREHOSE_ variables, so that a
// developer's settings do not leak into the processes under test.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, cli.EnvPrefix) {
			env = append(env, kv)
		}
	}
	return env
}

func (p *proc) wait(timeout time.Duration) (int, bool) {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode(), true
	case <-time.After(timeout):
		return 0, false
	}
}

// endShutdownDelay checks that p, sent SIGTERM with a one-minute
// --shutdown-delay, still runs; then a second SIGTERM must end it at once
// with exit code 0.
func (p *proc) endShutdownDelay() {
	p.t.Helper()
	select {
	case <-p.done:
		p.t.Fatalf("exited during the one-minute shutdown delay; output: %s", p.stderr.String())
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if code, ok := p.wait(20 * time.Second); !ok || code != 0 {
		p.t.Fatalf("after a second SIGTERM: exited %v with %d; output: %s", ok, code, p.stderr.String())
	}
}

func (p *proc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// freeAddr returns a loopback address with a free port outside the ephemeral
// range (testenv.FreeAddr).
func freeAddr(t *testing.T) string {
	t.Helper()
	return testenv.FreeAddr(t)
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no command", nil, 2, "Usage:"},
		{"unknown command", []string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{"bad flag value", []string{"serve", "--batch-size", "lots"}, 2, "invalid value"},
		{"unknown flag", []string{"serve", "--bogus"}, 2, "flag provided but not defined"},
		{"bad role", []string{"serve", "--roles", "httpgw,toaster"}, 2, `unknown role "toaster"`},
		{"bad batch size", []string{"serve", "--batch-size", "0"}, 2, "--batch-size 0"},
		{"bad log level", []string{"serve", "--log-level", "loud"}, 2, "--log-level"},
		{"negative shutdown delay", []string{"serve", "--shutdown-delay", "-1s"}, 2, "--shutdown-delay -1s"},
		{"console without an address", []string{"serve", "--admin-token", "x"}, 2, "--admin-token turns on the console on --admin-addr"},
		{"bad redis cluster mode", []string{"serve", "--redis-cluster", "maybe"}, 2, "--redis-cluster \"maybe\": want auto, yes or no"},
		{"cluster and sentinel", []string{"serve", "--redis-cluster", "yes", "--redis-sentinel-master", "m"}, 2, "a Redis Cluster fails over by itself"},
		{"bad cluster url", []string{"serve", "--redis-cluster", "yes", "--redis", "http://x"}, 2, "is not a Redis Cluster URL"},
		{"extra argument", []string{"migrate", "now"}, 2, "takes no arguments"},
		{"apikey without name", []string{"apikey"}, 2, "usage: firehose apikey"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(context.Background(), tc.args, &out, &errOut)
			if code != tc.code {
				t.Errorf("exit code %d, want %d; stderr: %s", code, tc.code, errOut.String())
			}
			if !strings.Contains(errOut.String(), tc.want) {
				t.Errorf("stderr %q does not contain %q", errOut.String(), tc.want)
			}
		})
	}
}

func TestEnvironmentFillsUnsetFlags(t *testing.T) {
	var cfg serveConfig
	fs := cli.NewFlagSet("serve", "", "")
	cfg.registerFlags(fs.FlagSet)
	env := map[string]string{"FIREHOSE_BATCH_SIZE": "123", "FIREHOSE_POSTGRES_URL": "postgres://db/x", "FIREHOSE_SHARDS": "8"}
	fs.LookupEnv = func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	if err := fs.Parse([]string{"--shards", "2"}); err != nil {
		t.Fatal(err)
	}
	if cfg.Bridge.BatchSize != 123 || cfg.Postgres != "postgres://db/x" {
		t.Errorf("environment not applied: batch size %d, postgres %q", cfg.Bridge.BatchSize, cfg.Postgres)
	}
	if cfg.Streams.Count != 2 {
		t.Errorf("flag must win over environment: shards %d", cfg.Streams.Count)
	}
}

func TestServeHelpDocumentsEveryFlag(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"serve", "--help"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d", code)
	}
	help := errOut.String()
	var cfg serveConfig
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfg.registerFlags(fs)
	fs.VisitAll(func(f *flag.Flag) {
		if !strings.Contains(help, "--"+f.Name) || !strings.Contains(help, cli.EnvName(f.Name)) {
			t.Errorf("help does not document --%s and %s", f.Name, cli.EnvName(f.Name))
		}
		if f.Usage == "" {
			t.Errorf("--%s has no usage text", f.Name)
		}
	})
	for _, want := range []string{"--http-addr", "FIREHOSE_HTTP_ADDR", "FIREHOSE_POSTGRES_URL", "FIREHOSE_REDIS_URL", "--batch-age", "--shards", "--high-water", "--log-level", "--config file", "FIREHOSE_CONFIG"} {
		if !strings.Contains(help, want) {
			t.Errorf("help lacks %s", want)
		}
	}
}

func TestUnreachableServicesGiveOneLineErrors(t *testing.T) {
	dead := freeAddr(t) // nothing listens there
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"redis", []string{"serve", "--redis", "redis://" + dead + "/0"}, "cannot reach Redis at redis://" + dead},
		{"postgres", []string{"migrate", "--postgres", "postgres://" + dead + "/firehose"}, "cannot reach PostgreSQL at postgres://" + dead},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(context.Background(), tc.args, &out, &errOut)
			msg := strings.TrimSpace(errOut.String())
			if code != 1 || !strings.Contains(msg, tc.want) || strings.Count(msg, "\n") > 0 {
				t.Errorf("exit %d, stderr %q; want exit 1 and one line containing %q", code, msg, tc.want)
			}
		})
	}
}

func TestIntegrationMissingDatabaseSaysHowToCreateIt(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	u := strings.Replace(testenv.PostgresAdminURL(), "/postgres", "/firehose_nonexistent_"+testenv.ID(), 1)
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"migrate", "--postgres", u}, &out, &errOut)
	if code != 1 || !strings.Contains(errOut.String(), "does not exist") || !strings.Contains(errOut.String(), "createdb") {
		t.Errorf("exit %d, stderr %q", code, errOut.String())
	}
}

func TestIntegrationMigrateIsIdempotent(t *testing.T) {
	pgURL := testenv.Postgres(t) // already migrated
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"migrate", "--postgres", pgURL}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "schema is current") {
		t.Errorf("second migrate said %q", out.String())
	}
}

func TestAPIKeyCommand(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"apikey", "gw-1", "pump-1,pump-2"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 4 || !strings.HasPrefix(strings.TrimSpace(lines[3]), "gw-1 ") || !strings.HasSuffix(lines[3], " pump-1,pump-2") {
		t.Errorf("unexpected output:\n%s", out.String())
	}
	key := strings.TrimSpace(lines[1])
	if strings.Contains(lines[3], key) {
		t.Error("the keys-file line contains the key itself, not its hash")
	}
}

// TestComposeMatchesBinary checks that compose.yaml only sets environment
// variables the binary reads and runs a command it has.
func TestComposeMatchesBinary(t *testing.T) {
	data, err := os.ReadFile("../../compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Services map[string]struct {
			Build       any               `yaml:"build"`
			Profiles    []string          `yaml:"profiles"`
			Command     []string          `yaml:"command"`
			Environment map[string]string `yaml:"environment"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("compose.yaml does not parse: %v", err)
	}
	if fh, ok := doc.Services["firehose"]; !ok || fh.Build == nil {
		t.Fatal("compose.yaml has no firehose service built from the Dockerfile")
	}
	// Every service built from the Dockerfile is a firehose process: its
	// environment must be what firehose serve reads, with valid values.
	roles := map[string]bool{}
	for name, svc := range doc.Services {
		if svc.Build == nil {
			continue
		}
		t.Run(name, func(t *testing.T) {
			if len(svc.Command) == 0 || svc.Command[0] != "serve" {
				t.Errorf("command %v, want serve", svc.Command)
			}
			var cfg serveConfig
			fs := flag.NewFlagSet("serve", flag.ContinueOnError)
			cfg.registerFlags(fs)
			known := map[string]bool{}
			fs.VisitAll(func(f *flag.Flag) { known[cli.EnvName(f.Name)] = true })
			if len(svc.Environment) == 0 {
				t.Fatal("sets no environment")
			}
			for k, v := range svc.Environment {
				if !known[k] {
					t.Errorf("sets %s, which firehose serve does not read", k)
					continue
				}
				if err := fs.Set(flagOf(fs, k), v); err != nil {
					t.Errorf("%s=%q: %v", k, v, err)
				}
			}
			for _, want := range []string{"FIREHOSE_POSTGRES_URL", "FIREHOSE_REDIS_URL"} {
				if _, ok := svc.Environment[want]; !ok {
					t.Errorf("does not set %s", want)
				}
			}
			if err := cfg.validate(); err != nil {
				t.Errorf("firehose serve would refuse this environment: %v", err)
			}
			rs, _ := cfg.roles()
			for _, r := range rs {
				if slices.Contains(svc.Profiles, "cluster") {
					roles[r] = true
				}
			}
		})
	}
	// The cluster profile runs every default role, on its own processes
	// (the subscriber needs a broker of the user's to subscribe to).
	for _, r := range defaultRoles {
		if !roles[r] {
			t.Errorf("the cluster profile runs no %s", r)
		}
	}
	if _, err := os.Stat("../../Dockerfile"); err != nil {
		t.Errorf("compose builds from a Dockerfile: %v", err)
	}
}

func flagOf(fs *flag.FlagSet, env string) string {
	name := ""
	fs.VisitAll(func(f *flag.Flag) {
		if cli.EnvName(f.Name) == env {
			name = f.Name
		}
	})
	return name
}

// metric reads one sample of a Prometheus text exposition.
func metric(t *testing.T, url, name string) (float64, bool) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, name+" ") {
			var v float64
			if _, err := fmt.Sscan(strings.TrimPrefix(line, name+" "), &v); err == nil {
				return v, true
			}
		}
	}
	return 0, false
}

func countRows(t *testing.T, pgURL, query string, args ...any) int {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(t.Context(), query, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func post(t *testing.T, url, contentType, device, body string) (int, string) {
	t.Helper()
	return postKeyed(t, url, contentType, device, "", body)
}

// postKeyed is post with an Idempotency-Key header, unless key is "".
func postKeyed(t *testing.T, url, contentType, device, key, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	if device != "" {
		req.Header.Set("X-Device-ID", device)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	return send(t, req)
}

// send sends req and returns the answer's status and body.
func send(t *testing.T, req *http.Request) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
