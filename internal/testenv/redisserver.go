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
	if testing.Short() {
		t.Skip("integration test: skipped under -short")
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &RedisServer{Port: ln.Addr().(*net.TCPAddr).Port, bin: bin}
	ln.Close()
	s.args = append([]string{"--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1", "--dir", t.TempDir(),
		"--save", "", "--appendonly", "no", "--protected-mode", "no", "--loglevel", "warning"}, args...)
	s.start(t)
	t.Cleanup(s.Kill)
	return s
}

// Restart starts the server again after Kill, with the same port, data
// directory and arguments, and waits until it answers.
func (s *RedisServer) Restart(t testing.TB) {
	t.Helper()
	s.start(t)
}

func (s *RedisServer) start(t testing.TB) {
	t.Helper()
	s.done = make(chan struct{})
	s.cmd = exec.Command(s.bin, s.args...)
	s.cmd.Stdout, s.cmd.Stderr = &s.out, &s.out
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	cmd, done := s.cmd, s.done
	go func() { _ = cmd.Wait(); close(done) }()

	probe := redis.NewClient(&redis.Options{Addr: s.Addr(), DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
	defer probe.Close()
	Eventually(t, 10*time.Second, func() bool {
		select {
		case <-done:
			t.Fatalf("redis-server on port %d exited: %s", s.Port, s.out.String())
		default:
		}
		// The process id tells this server from another test's that took
		// the port in the meantime.
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		info, err := probe.Info(ctx, "server").Result()
		return err == nil && strings.Contains(info, fmt.Sprintf("process_id:%d\r\n", cmd.Process.Pid))
	}, "redis-server on port %d did not answer: %s", s.Port, s.out.String())
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
