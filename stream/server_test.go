//go:build unix

package stream_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"firehose/ingest"
	"firehose/internal/syncbuf"
	"firehose/stream"
)

// redisServer is a throwaway redis-server of one test, on a loopback port of
// its own, that the test may kill, restart and pause. It is killed when the
// test ends.
type redisServer struct {
	t    testing.TB
	bin  string
	dir  string
	port int

	out syncbuf.Buffer // the server's output, for the message when it fails to start

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	paused bool
}

func startRedisServer(t testing.TB) *redisServer {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: skipped under -short")
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed")
	}
	s := &redisServer{t: t, bin: bin, dir: t.TempDir()}
	t.Cleanup(s.stop)
	for attempt := 1; ; attempt++ {
		s.port = freePort(t)
		err := s.tryStart()
		if err == nil {
			return s
		}
		if attempt == 3 {
			t.Fatalf("start redis-server: %v", err)
		}
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (s *redisServer) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

func (s *redisServer) tryStart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("already running")
	}
	cmd := exec.Command(s.bin, "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir, "--protected-mode", "no", "--loglevel", "warning")
	s.out.Reset()
	cmd.Stdout, cmd.Stderr = &s.out, &s.out
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	s.cmd, s.exited = cmd, exited

	probe := redis.NewClient(&redis.Options{Addr: s.addr(), DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
	defer probe.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		// Ask for the process id: a server of another test that took the
		// port in the meantime must not pass for this one.
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		info, err := probe.Info(ctx, "server").Result()
		cancel()
		if err == nil {
			if strings.Contains(info, fmt.Sprintf("process_id:%d\r\n", cmd.Process.Pid)) {
				return nil
			}
			err = fmt.Errorf("another server answers on port %d", s.port)
		}
		select {
		case <-exited:
			s.cmd = nil
			return fmt.Errorf("redis-server on port %d exited: %s", s.port, s.out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			s.cmd = nil
			return fmt.Errorf("redis-server on port %d did not answer within 10s: %v", s.port, err)
		}
	}
}

// restart starts the server again on the same port, with no data.
func (s *redisServer) restart() {
	s.t.Helper()
	var err error
	for range 3 {
		if err = s.tryStart(); err == nil {
			return
		}
	}
	s.t.Fatalf("restart redis-server on port %d: %v", s.port, err)
}

// kill ends the server the way a crash would (SIGKILL) and waits for it.
func (s *redisServer) kill() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd, s.paused = nil, false
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exited
}

// pause stops the server (SIGSTOP): connections stay open and nothing is
// answered, as with a Redis stalled by a long command or a swap storm. The
// test's cleanup resumes it before the producer is stopped.
func (s *redisServer) pause() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		s.t.Fatalf("pause redis-server: %v", err)
	}
	s.paused = true
	s.t.Cleanup(s.resume)
}

func (s *redisServer) resume() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil && s.paused {
		_ = s.cmd.Process.Signal(syscall.SIGCONT)
		s.paused = false
	}
}

func (s *redisServer) stop() {
	s.resume()
	s.kill()
}

// client is a go-redis client of the server, closed when the test ends.
func (s *redisServer) client(opt redis.Options) *redis.Client {
	opt.Addr = s.addr()
	if opt.MaxRetries == 0 {
		opt.MaxRetries = -1 // the producer refuses a client that retries
	}
	if opt.DialTimeout == 0 {
		opt.DialTimeout = time.Second
	}
	c := redis.NewClient(&opt)
	s.t.Cleanup(func() { c.Close() })
	return c
}

// TestIntegrationProducerRedisDown: while Redis is down Add never answers nil
// and its error wraps ErrUnavailable; Ready says so; once Redis is back the
// same producer accepts readings again.
func TestIntegrationProducerRedisDown(t *testing.T) {
	t.Parallel()
	srv := startRedisServer(t)
	rdb := srv.client(redis.Options{})
	streams := stream.Streams{Prefix: "down", Count: 2}
	p, reg, _ := startProducer(t, rdb, streams, stream.ProducerConfig{BacklogInterval: 20 * time.Millisecond, Timeout: 2 * time.Second})
	ctx := t.Context()

	add := func(v float64) error { return p.Add(ctx, []ingest.Reading{newReading("pump-7", v)}) }
	if err := add(1); err != nil {
		t.Fatalf("Add with Redis up: %v", err)
	}
	if err := p.Ready(); err != nil {
		t.Fatalf("Ready() with Redis up: %v", err)
	}

	srv.kill()
	// Both paths: a write that fails, and the refusal once the poller has
	// seen Redis go.
	for i := range 5 {
		if err := add(float64(100 + i)); !errors.Is(err, ingest.ErrUnavailable) {
			t.Fatalf("Add %d with Redis down = %v, want ErrUnavailable", i, err)
		}
	}
	eventually(t, 10*time.Second, func() error { return wantErr("Ready() with Redis down", p.Ready(), ingest.ErrUnavailable) })
	if err := add(2); !errors.Is(err, ingest.ErrUnavailable) {
		t.Fatalf("Add once Redis is known down = %v, want ErrUnavailable", err)
	}
	if v, _, _ := metricValue(t, reg, "firehose_producer_refused_total", "reason", "redis_unavailable"); v < 1 {
		t.Errorf("refusals for redis_unavailable = %v, want >= 1", v)
	}

	srv.restart()
	eventually(t, 15*time.Second, func() error {
		err := add(3)
		if err != nil && !errors.Is(err, ingest.ErrUnavailable) {
			t.Fatalf("Add while Redis comes back = %v, want nil or ErrUnavailable", err)
		}
		return wantErr("Add after Redis came back", err, nil)
	})
	if err := p.Ready(); err != nil {
		t.Errorf("Ready() after a successful Add = %v", err)
	}
	// What was acknowledged after the restart is in the new server.
	n := 0
	for _, entries := range readStreams(t, rdb, streams) {
		for _, e := range entries {
			if e.r.Value != 3 {
				t.Errorf("unexpected entry %v after the restart", e.r.Value)
			}
			n++
		}
	}
	if n < 1 {
		t.Errorf("no entry in Redis after an acknowledged Add")
	}
}

// TestIntegrationProducerClosedWhileRedisDown: after shutdown Add answers
// ErrClosed even though Redis is also down.
func TestIntegrationProducerClosedWhileRedisDown(t *testing.T) {
	t.Parallel()
	srv := startRedisServer(t)
	rdb := srv.client(redis.Options{})
	p, _, cancel := startProducer(t, rdb, stream.Streams{Prefix: "closed", Count: 1}, stream.ProducerConfig{BacklogInterval: 10 * time.Millisecond})
	srv.kill()
	eventually(t, 10*time.Second, func() error { return wantErr("Ready() with Redis down", p.Ready(), ingest.ErrUnavailable) })
	cancel()
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed 10s after cancel")
	}
	if err := p.Ready(); !errors.Is(err, ingest.ErrClosed) {
		t.Errorf("Ready() = %v, want ErrClosed", err)
	}
	if err := p.Add(t.Context(), []ingest.Reading{newReading("d", 1)}); !errors.Is(err, ingest.ErrClosed) {
		t.Errorf("Add after Run returned = %v, want ErrClosed", err)
	}
}

// stalledClient is a client that waits for a paused server instead of timing
// out, so a test decides when the stall ends.
func stalledClient(srv *redisServer) *redis.Client {
	return srv.client(redis.Options{ReadTimeout: time.Minute, WriteTimeout: time.Minute, PoolSize: 8})
}

// TestIntegrationProducerOverloaded: with Redis stalled, Add queues up to
// QueueSize readings and refuses the next with ErrOverloaded at once; the
// queued callers are answered once Redis resumes.
func TestIntegrationProducerOverloaded(t *testing.T) {
	t.Parallel()
	srv := startRedisServer(t)
	rdb := stalledClient(srv)
	streams := stream.Streams{Prefix: "overload", Count: 2}
	p, reg, _ := startProducer(t, rdb, streams, stream.ProducerConfig{QueueSize: 4, Pipelines: 1, MaxBatch: 1, Timeout: time.Minute})

	queuedIs := func(want float64) error {
		if v, _, _ := metricValue(t, reg, "firehose_producer_queued_readings"); v != want {
			return fmt.Errorf("firehose_producer_queued_readings = %v, want %v", v, want)
		}
		return nil
	}
	if err := p.Add(t.Context(), []ingest.Reading{newReading("d", 0)}); err != nil {
		t.Fatalf("Add before the stall: %v", err)
	}
	// The writer counts a round trip's readings out just after answering.
	eventually(t, 5*time.Second, func() error { return queuedIs(0) })
	srv.pause()

	errs := make(chan error, 4)
	for i := range 4 {
		go func() { errs <- p.Add(context.Background(), []ingest.Reading{newReading("d", float64(1+i))}) }()
	}
	eventually(t, 10*time.Second, func() error { return queuedIs(4) })

	tryAdd := func(n int) error {
		t.Helper()
		var rs []ingest.Reading
		for i := range n {
			rs = append(rs, newReading("e", float64(i)))
		}
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- p.Add(ctx, rs) }()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatalf("Add of %d readings blocked past its context", n)
			return nil
		}
	}
	if err := tryAdd(1); !errors.Is(err, ingest.ErrOverloaded) {
		t.Errorf("Add with a full queue = %v, want ErrOverloaded", err)
	}
	// A call of QueueSize readings or more is taken only when nothing else
	// waits; otherwise a few of them would overflow the queue.
	for _, n := range []int{4, 5, 4} {
		if err := tryAdd(n); !errors.Is(err, ingest.ErrOverloaded) {
			t.Errorf("Add of %d readings with a full queue = %v, want ErrOverloaded", n, err)
		}
	}
	if v, _, _ := metricValue(t, reg, "firehose_producer_refused_total", "reason", "overloaded"); v != 4 {
		t.Errorf("refusals for overloaded = %v, want 4", v)
	}
	if err := p.Ready(); err != nil {
		t.Errorf("Ready() = %v: a full queue is not a reason to fail readiness", err)
	}

	srv.resume()
	for range 4 {
		select {
		case err := <-errs:
			if err != nil {
				t.Errorf("queued Add after Redis resumed = %v, want nil", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("queued Add not answered 20s after Redis resumed")
		}
	}
	eventually(t, 5*time.Second, func() error { return queuedIs(0) })
	if err := p.Add(t.Context(), []ingest.Reading{newReading("d", 9)}); err != nil {
		t.Errorf("Add after the stall: %v", err)
	}
}

// TestIntegrationProducerAddContext: a caller whose context ends while Redis
// is stalled gets ctx.Err() at once.
func TestIntegrationProducerAddContext(t *testing.T) {
	t.Parallel()
	srv := startRedisServer(t)
	rdb := stalledClient(srv)
	p, _, _ := startProducer(t, rdb, stream.Streams{Prefix: "ctx", Count: 1}, stream.ProducerConfig{Timeout: time.Minute})
	srv.pause()
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := p.Add(ctx, []ingest.Reading{newReading("d", 1)}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Add with a stalled Redis and an ending context = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Add returned %s after its context ended", d)
	}
}

// TestIntegrationProducerShutdownFlushesQueue: readings queued when ctx is
// cancelled are still written and acknowledged; from the cancel on, new
// readings are refused with ErrClosed even while Redis is stalled.
func TestIntegrationProducerShutdownFlushesQueue(t *testing.T) {
	t.Parallel()
	srv := startRedisServer(t)
	rdb := stalledClient(srv)
	streams := stream.Streams{Prefix: "flush", Count: 3}
	p, reg, cancel := startProducer(t, rdb, streams, stream.ProducerConfig{Pipelines: 1, MaxBatch: 2, BacklogInterval: 10 * time.Millisecond, Timeout: time.Minute})
	if err := p.Add(t.Context(), []ingest.Reading{newReading("warm-up", -1)}); err != nil {
		t.Fatalf("Add before the stall: %v", err)
	}
	srv.pause()

	const queuedCalls = 10
	errs := make(chan error, queuedCalls)
	for i := range queuedCalls {
		go func() {
			errs <- p.Add(context.Background(), []ingest.Reading{newReading(fmt.Sprintf("q-%d", i), float64(i))})
		}()
	}
	queuedIs := func(want float64) error {
		if v, _, _ := metricValue(t, reg, "firehose_producer_queued_readings"); v != want {
			return fmt.Errorf("firehose_producer_queued_readings = %v, want %v", v, want)
		}
		return nil
	}
	eventually(t, 10*time.Second, func() error { return queuedIs(queuedCalls) })
	// Both the writer and the backlog poller wait for Redis on a connection.
	inUse := func() uint32 {
		s := rdb.PoolStats()
		n := s.TotalConns - s.IdleConns
		if s.PipelineStats != nil { // pipelines may have a pool of their own
			n += s.PipelineStats.TotalConns - s.PipelineStats.IdleConns
		}
		return n
	}
	eventually(t, 10*time.Second, func() error {
		if n := inUse(); n < 2 {
			return fmt.Errorf("%d connections in use, want the writer's and the poller's", n)
		}
		return nil
	})

	cancel()
	// Redis is still stalled (the backlog poller too): shutdown has begun,
	// and nothing new is taken.
	eventually(t, 5*time.Second, func() error { return wantErr("Ready() after cancel with Redis stalled", p.Ready(), ingest.ErrClosed) })
	if err := p.Add(t.Context(), []ingest.Reading{newReading("late", 100)}); !errors.Is(err, ingest.ErrClosed) {
		t.Errorf("Add after cancel = %v, want ErrClosed", err)
	}
	select {
	case <-p.Done():
		t.Fatal("Done closed before the queued readings were written")
	default:
	}

	srv.resume()
	for range queuedCalls {
		select {
		case err := <-errs:
			if err != nil {
				t.Errorf("Add queued at shutdown = %v, want nil", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("Add queued at shutdown not answered")
		}
	}
	select {
	case <-p.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("Done not closed after the queue was written")
	}
	seen := map[float64]bool{}
	for _, entries := range readStreams(t, rdb, streams) {
		for _, e := range entries {
			seen[e.r.Value] = true
		}
	}
	for i := range queuedCalls {
		if !seen[float64(i)] {
			t.Errorf("reading %d acknowledged at shutdown is not in Redis", i)
		}
	}
	if seen[100] {
		t.Errorf("reading refused with ErrClosed is in Redis")
	}
}

// TestIntegrationProducerStallFailsQueuedAtOnce: with Redis stalled, the
// first round trip waits its timeout; every call queued behind it is then
// answered ErrUnavailable at once instead of each waiting a timeout of its
// own (12 calls of 1,000 readings used to be answered 5 s apart, the last
// after a minute), and the producer keeps refusing until Redis answers.
func TestIntegrationProducerStallFailsQueuedAtOnce(t *testing.T) {
	t.Parallel()
	srv := startRedisServer(t)
	const timeout = time.Second
	rdb := srv.client(redis.Options{ReadTimeout: timeout, WriteTimeout: timeout, PoolSize: 4})
	streams := stream.Streams{Prefix: "stall", Count: 2}
	p, _, _ := startProducer(t, rdb, streams, stream.ProducerConfig{Pipelines: 1, MaxBatch: 1024, BacklogInterval: 50 * time.Millisecond, Timeout: timeout})
	if err := p.Add(t.Context(), []ingest.Reading{newReading("warm-up", -1)}); err != nil {
		t.Fatalf("Add before the stall: %v", err)
	}
	srv.pause()
	const calls = 12
	type answer struct {
		err   error
		after time.Duration
	}
	answers := make(chan answer, calls)
	start := time.Now()
	for i := range calls {
		go func() {
			rs := make([]ingest.Reading, 1000)
			for j := range rs {
				rs[j] = newReading(fmt.Sprintf("d-%d", i), float64(j))
			}
			err := p.Add(context.Background(), rs)
			answers <- answer{err, time.Since(start)}
		}()
	}
	var last time.Duration
	for range calls {
		select {
		case a := <-answers:
			if !errors.Is(a.err, ingest.ErrUnavailable) {
				t.Errorf("Add with Redis stalled = %v, want ErrUnavailable", a.err)
			}
			last = max(last, a.after)
		case <-time.After(30 * time.Second):
			t.Fatal("an Add with Redis stalled got no answer within 30 s")
		}
	}
	// One round trip's timeout (plus the poller's, which may hold the state
	// a moment longer) and scheduling slack: never one timeout per call.
	if limit := 4 * timeout; last > limit {
		t.Errorf("the last of %d queued calls was answered after %s, want within %s", calls, last, limit)
	}
	if err := p.Add(t.Context(), []ingest.Reading{newReading("during", 1)}); !errors.Is(err, ingest.ErrUnavailable) {
		t.Errorf("Add while Redis is known stalled = %v, want ErrUnavailable at once", err)
	}
	srv.resume()
	eventually(t, 15*time.Second, func() error {
		return wantErr("Add after Redis resumed", p.Add(t.Context(), []ingest.Reading{newReading("after", 2)}), nil)
	})
}

// TestIntegrationProducerRefusesRetryingClient: a client that would resend a
// failed pipeline (go-redis's default MaxRetries) is refused by Run, and every
// call is answered ErrClosed, never stored.
func TestIntegrationProducerRefusesRetryingClient(t *testing.T) {
	t.Parallel()
	srv := startRedisServer(t)
	rdb := srv.client(redis.Options{MaxRetries: 3})
	reg := prometheus.NewRegistry()
	p := stream.NewProducer(rdb, stream.Streams{Prefix: "retry", Count: 1}, stream.ProducerConfig{}, slog.New(slog.DiscardHandler), reg)
	err := p.Run(t.Context())
	if err == nil || !strings.Contains(err.Error(), "MaxRetries") {
		t.Fatalf("Run with a retrying client = %v, want an error naming MaxRetries", err)
	}
	if err := p.Add(t.Context(), []ingest.Reading{newReading("d", 1)}); !errors.Is(err, ingest.ErrClosed) {
		t.Errorf("Add after Run refused the client = %v, want ErrClosed", err)
	}
	select {
	case <-p.Done():
	default:
		t.Error("Done not closed after Run refused the client")
	}
}
