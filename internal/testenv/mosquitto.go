package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"firehose/internal/syncbuf"
)

// Mosquitto is a throwaway Mosquitto broker of one test, on a free loopback
// port, with the settings firehose's subscriber requires of a broker
// (docs/subscribe.md): persistence on, no queue limit (max_queued_messages
// 0), anonymous access. The test may restart it (SIGTERM: it saves its
// persistence file), kill it, or pause and resume it; it is killed when the
// test ends.
type Mosquitto struct {
	Port int
	dir  string
	conf string
	cmd  *exec.Cmd
	out  syncbuf.Buffer
	done chan struct{}
}

// StartMosquitto starts mosquitto with the required settings plus the
// configuration lines extra, and waits until it accepts connections. It
// skips the test under -short; without the mosquitto binary it fails under
// CI=true (scripts/testtools.sh installs it) and skips otherwise.
func StartMosquitto(t testing.TB, extra ...string) *Mosquitto {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: skipped under -short")
	}
	bin, err := MosquittoPath()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("mosquitto is not installed (scripts/testtools.sh ensure installs it)")
		}
		t.Skip("mosquitto is not installed: scripts/testtools.sh ensure installs it")
	}
	m := &Mosquitto{dir: t.TempDir()}
	for attempt := 1; ; attempt++ {
		m.Port = FreePort(t)
		m.conf = filepath.Join(m.dir, "mosquitto.conf")
		lines := []string{
			"listener " + strconv.Itoa(m.Port) + " 127.0.0.1",
			"allow_anonymous true",
			// Started as root, mosquitto would become user mosquitto, who
			// may not read the test's files: it stays who started it.
			"user " + currentUser(),
			"persistence true",
			"persistence_location " + m.dir + "/",
			"max_queued_messages 0",
			// At least the subscriber's Receive Maximum, not 0 (unlimited):
			// restored from its persistence file, Mosquitto 2.0 queues the
			// messages in flight beyond it and resends them as PUBLISH, even
			// those whose PUBREL it had sent (against MQTT 4.3.3), which at
			// QoS 2 would land twice (docs/subscribe.md).
			"max_inflight_messages 1000",
			"log_dest stderr",
			"log_type error",
			"log_type warning",
		}
		lines = append(lines, extra...)
		if err := os.WriteFile(m.conf, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		err := m.start(bin)
		if err == nil {
			t.Cleanup(m.Kill)
			return m
		}
		if !strings.Contains(err.Error(), "in use") || attempt == 5 {
			t.Fatal(err)
		}
	}
}

// MosquittoPath is the mosquitto binary (on PATH or /usr/sbin), or an
// error when it is not installed.
func MosquittoPath() (string, error) {
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if bin, err = exec.LookPath("/usr/sbin/mosquitto"); err != nil {
			return "", fmt.Errorf("mosquitto is not installed: %w", err)
		}
	}
	return bin, nil
}

func (m *Mosquitto) start(bin string) error {
	m.done = make(chan struct{})
	m.out.Reset()
	m.cmd = exec.Command(bin, "-c", m.conf)
	m.cmd.Stdout, m.cmd.Stderr = &m.out, &m.out
	if err := m.cmd.Start(); err != nil {
		return fmt.Errorf("start mosquitto: %w", err)
	}
	cmd, done := m.cmd, m.done
	go func() { _ = cmd.Wait(); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-done:
			return fmt.Errorf("mosquitto on port %d exited: %s", m.Port, m.out.String())
		default:
		}
		if c, err := net.DialTimeout("tcp", m.Addr(), 200*time.Millisecond); err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			return fmt.Errorf("mosquitto on port %d did not listen within 10s: %s", m.Port, m.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Addr is host:port; URL is tcp://host:port.
func (m *Mosquitto) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(m.Port)) }
func (m *Mosquitto) URL() string  { return "tcp://" + m.Addr() }

// Restart stops the broker with SIGTERM (it saves its persistence file and
// exits) and starts it again with the same port and data directory.
func (m *Mosquitto) Restart(t testing.TB) {
	t.Helper()
	m.Stop()
	m.Start(t)
}

// Stop stops the broker with SIGTERM (it saves its persistence file) and
// waits until it has exited; Start starts it again with the same port and
// data directory (a broker down between the two, as for a maintenance).
func (m *Mosquitto) Stop() {
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	<-m.done
}

// Start starts the broker Stop stopped, and waits until it accepts
// connections.
func (m *Mosquitto) Start(t testing.TB) {
	t.Helper()
	if err := m.start(m.cmd.Path); err != nil {
		t.Fatal(err)
	}
}

// Kill ends the broker with SIGKILL and waits for it.
func (m *Mosquitto) Kill() {
	_ = m.cmd.Process.Signal(syscall.SIGKILL)
	<-m.done
}

// Pause stops the broker (SIGSTOP: its connections stay open and nothing is
// read, answered or sent, as when the network path to it is frozen); Resume
// continues it.
func (m *Mosquitto) Pause()  { _ = m.cmd.Process.Signal(syscall.SIGSTOP) }
func (m *Mosquitto) Resume() { _ = m.cmd.Process.Signal(syscall.SIGCONT) }

// Output is what the broker logged.
func (m *Mosquitto) Output() string { return m.out.String() }

// currentUser is the name of the user running the test.
func currentUser() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return "root"
}
