package testenv

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"firehose/internal/syncbuf"
)

// RedisServer is a throwaway redis-server of one test, on a free loopback
// port, that the test may kill, pause and resume. It is killed when the test
// ends.
type RedisServer struct {
	Port int
	bin  string
	args []string
	cmd  *exec.Cmd
	out  syncbuf.Buffer
	done chan struct{}
}

// StartRedisServer starts redis-server with no persistence unless args say
// otherwise (they follow the defaults, so "--appendonly", "yes" wins), and
// waits until it answers. It skips the test under -short or without
// redis-server.
func StartRedisServer(t testing.TB, args ...string) *RedisServer {
	t.Helper()
	return startRedisServer(t, false, args)
}

// startRedisServer starts a redis-server on a FreePort, with a cluster bus on
// another (--cluster-port) when bus is set. A port taken between its choice
// and the server's bind (another test's server, on a loaded machine) makes
// it try again on other ports.
func startRedisServer(t testing.TB, bus bool, args []string) *RedisServer {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: skipped under -short")
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed")
	}
	dir := t.TempDir()
	for attempt := 1; ; attempt++ {
		s := &RedisServer{Port: FreePort(t), bin: bin}
		s.args = []string{"--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1", "--dir", dir,
			"--save", "", "--appendonly", "no", "--protected-mode", "no", "--loglevel", "warning"}
		if bus {
			// A bus port of its own: the default, the port + 10,000, does
			// not exist for a port above 55,535, and may be taken.
			s.args = append(s.args, "--cluster-port", strconv.Itoa(FreePort(t)))
		}
		s.args = append(s.args, args...)
		err := s.start()
		if err == nil {
			t.Cleanup(s.Kill)
			return s
		}
		if !strings.Contains(err.Error(), "already in use") || attempt == 5 {
			t.Fatal(err)
		}
		t.Logf("redis-server: a port was taken meanwhile, trying others: %v", err)
	}
}

// Restart starts the server again after Kill, with the same port, data
// directory and arguments, and waits until it answers.
func (s *RedisServer) Restart(t testing.TB) {
	t.Helper()
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
}

// start runs the server and waits until it answers; it returns an error
// (with the server's output) when the server exits or does not answer
// within 10 s.
func (s *RedisServer) start() error {
	s.done = make(chan struct{})
	s.out.Reset()
	s.cmd = exec.Command(s.bin, s.args...)
	s.cmd.Stdout, s.cmd.Stderr = &s.out, &s.out
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	cmd, done := s.cmd, s.done
	go func() { _ = cmd.Wait(); close(done) }()

	probe := redis.NewClient(&redis.Options{Addr: s.Addr(), DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
	defer probe.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-done:
			return fmt.Errorf("redis-server on port %d exited: %s", s.Port, s.out.String())
		default:
		}
		// The process id tells this server from another test's that took
		// the port in the meantime.
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		info, err := probe.Info(ctx, "server").Result()
		cancel()
		if err == nil && strings.Contains(info, fmt.Sprintf("process_id:%d\r\n", cmd.Process.Pid)) {
			return nil
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			return fmt.Errorf("redis-server on port %d did not answer within 10s: %s", s.Port, s.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Addr is host:port; URL the Redis URL of database 0.
func (s *RedisServer) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)) }
func (s *RedisServer) URL() string  { return "redis://" + s.Addr() + "/0" }

// Kill ends the server with SIGKILL and waits for it.
func (s *RedisServer) Kill() {
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
}

// Pause stops the server (SIGSTOP: connections stay open, nothing is
// answered); Resume continues it.
func (s *RedisServer) Pause()  { _ = s.cmd.Process.Signal(syscall.SIGSTOP) }
func (s *RedisServer) Resume() { _ = s.cmd.Process.Signal(syscall.SIGCONT) }
