package broker

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"net/netip"

	"golang.org/x/sys/unix"

	"firehose/internal/testcert"
	"firehose/internal/testenv"
)

// TestClientGone asks of the server's end of a connection whether its
// client left: not while it is open, bytes unread or not; yes once it
// closed, a TLS client's close_notify left unread included.
func TestClientGone(t *testing.T) {
	t.Run("tcp", func(t *testing.T) {
		client, server := tcpPair(t)
		if clientGone(server) {
			t.Fatal("an open connection is reported gone")
		}
		if _, err := client.Write([]byte{0x30, 0x00}); err != nil {
			t.Fatal(err)
		}
		testenv.Await(t, func() bool { return readable(server) }, "the client's bytes reach the server")
		if clientGone(server) {
			t.Fatal("an open connection with bytes unread is reported gone")
		}
		_ = client.Close()
		testenv.Await(t, func() bool { return clientGone(server) }, "a closed connection reported gone")
	})
	t.Run("tls", func(t *testing.T) {
		certFile, keyFile, pool := testcert.SelfSigned(t)
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		rawClient, rawServer := tcpPair(t)
		server := tls.Server(rawServer, &tls.Config{Certificates: []tls.Certificate{cert}})
		client := tls.Client(rawClient, &tls.Config{RootCAs: pool, ServerName: "localhost"})
		done := make(chan error, 1)
		go func() { done <- server.Handshake() }()
		if err := client.Handshake(); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if clientGone(server) {
			t.Fatal("an open TLS connection is reported gone")
		}
		_ = client.Close() // close_notify, then FIN
		testenv.Await(t, func() bool { return clientGone(server) }, "a closed TLS connection reported gone")
	})
}

// tcpPair is a loopback TCP connection's two ends, closed with the test.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { _ = client.Close(); _ = server.Close() })
	return client, server
}

// readable tells whether bytes wait to be read on c (a *net.TCPConn).
func readable(c net.Conn) bool {
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		return false
	}
	ready := false
	_ = rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		ready = err == nil && n > 0 && fds[0].Revents&unix.POLLIN != 0
	})
	return ready
}

// TestIntegrationConnectOfGoneClient: a CONNECT that waited for a bcrypt
// slot while its client gave up and closed the connection is dropped
// without a bcrypt check, and counted client_gone.
func TestIntegrationConnectOfGoneClient(t *testing.T) {
	t.Parallel()
	creds := filepath.Join(t.TempDir(), "creds")
	writeCredentials(t, creds, map[string]string{"gone": cheapHash(t, "pw-g")})
	s := newStack(t, stackOptions{cfg: Config{AuthFile: creds}})
	slots := s.b.auth.slots
	for range cap(slots.run) { // every slot busy: the connect waits
		slots.run <- struct{}{}
	}
	c, err := net.Dial("tcp", s.tcpAddr())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(connectV3Bytes("gone", "gone", "pw-g")); err != nil {
		t.Fatal(err)
	}
	testenv.Await(t, func() bool { return slots.waiting.Load() == 1 }, "the CONNECT waits for a bcrypt slot")
	_ = c.Close()
	testenv.Await(t, func() bool { return tcpState(t, s.tcpAddr(), c.LocalAddr().String()) == tcpCloseWait },
		"the broker's end of the connection sees the client's FIN (CLOSE_WAIT)")
	for range cap(slots.run) {
		<-slots.run
	}
	testenv.Await(t, func() bool { return s.metric("firehose_mqtt_connects_refused_total", "reason", "client_gone") == 1 },
		"the CONNECT of a client gone is counted client_gone")
	if n := s.metric("firehose_mqtt_auth_password_checks_total"); n != 0 {
		t.Errorf("bcrypt comparisons for a client gone: %v, want 0", n)
	}
}

// connectV3Bytes is an MQTT 3.1.1 CONNECT with a clean session, a user
// name and a password, as a client writes it.
func connectV3Bytes(id, user, password string) []byte {
	str := func(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
	body := append(str("MQTT"), 4, 0xC2, 0, 60) // level 4; user, password, clean session; keep-alive 60 s
	body = append(append(append(body, str(id)...), str(user)...), str(password)...)
	return append([]byte{0x10, byte(len(body))}, body...) // len(body) < 128: a one-byte length
}

const tcpCloseWait = "08"

// tcpState is the state (/proc/net/tcp's st, hex) of the IPv4 loopback
// socket from local to remote, "" when there is none.
func tcpState(t *testing.T, local, remote string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	hex := func(addr string) string {
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		ip := ap.Addr().As4()
		return fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], ap.Port())
	}
	l, r := hex(local), hex(remote)
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 3 && f[1] == l && f[2] == r {
			return f[3]
		}
	}
	return ""
}
