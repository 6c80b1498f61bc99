package ticketkeys

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"firehose/internal/testcert"
)

func TestParse(t *testing.T) {
	hexKey := strings.Repeat("ab", 32)
	b64Key := base64.StdEncoding.EncodeToString(make([]byte, 32))
	for _, tc := range []struct {
		name  string
		text  string
		keys  int
		first byte
		err   string // in the error; "": valid
	}{
		{name: "hex", text: hexKey + "\n", keys: 1, first: 0xab},
		{name: "base64 then hex, comments and blanks", text: "# rotation\n\n" + b64Key + "\n  " + hexKey + "  \n", keys: 2, first: 0},
		{name: "base64 unpadded", text: strings.TrimRight(b64Key, "="), keys: 1},
		{name: "empty", text: "\n# nothing\n", err: "no session ticket key"},
		{name: "short hex", text: hexKey[:62] + "\n", err: "keys:1: key of 31 bytes, want 32"},
		{name: "long base64", text: hexKey + "\n" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("\xff", 48))), err: "keys:2: key of 48 bytes, want 32"},
		{name: "64 characters not hex", text: strings.Repeat("z", 64), err: "keys:1: key of 48 bytes, want 32"},
		{name: "neither", text: "not a key!", err: "keys:1: a key is 32 bytes in hex"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys, err := Parse("keys", []byte(tc.text))
			switch {
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Errorf("error %v, want one saying %q", err, tc.err)
			case tc.err == "" && err != nil:
				t.Errorf("error %v", err)
			case tc.err == "" && (len(keys) != tc.keys || keys[0][0] != tc.first):
				t.Errorf("%d keys, first starting %x; want %d, %x", len(keys), keys[0][0], tc.keys, tc.first)
			}
		})
	}
}

// writeKeys writes a key file of keys (hex lines) to path, replacing it in
// one rename.
func writeKeys(t *testing.T, path string, keys ...string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.Join(keys, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func newKey(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// server is a TLS listener on 127.0.0.1 whose tickets use a key file, as
// an edge's: it handshakes each connection and writes one byte, which
// carries the session ticket to a client that reads it.
type server struct {
	ln   net.Listener
	keys *Keys
	wg   sync.WaitGroup
}

func startServer(t *testing.T, certFile, keyFile, keysFile string) *server {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := Load(keysFile, "--test-ticket-keys", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	keys.Apply(tc)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", tc)
	if err != nil {
		t.Fatal(err)
	}
	s := &server{ln: ln, keys: keys}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte{1}) // handshakes, then sends the ticket and the byte
			_ = c.Close()
		}
	})
	t.Cleanup(s.close)
	return s
}

func (s *server) close() {
	_ = s.ln.Close()
	s.wg.Wait()
}

// handshake connects with cache and reports whether the session resumed.
func handshake(t *testing.T, addr string, pool *x509.CertPool, cache tls.ClientSessionCache) bool {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "localhost", ClientSessionCache: cache})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Read(make([]byte, 1)); err != nil { // takes in the ticket
		t.Fatal(err)
	}
	return c.ConnectionState().DidResume
}

// TestResumptionAcrossRestarts: a session resumes on a new listener (a
// restarted edge) with the same key file, not with another key, and with
// a rotated file whose second key is the one that issued the ticket.
func TestResumptionAcrossRestarts(t *testing.T) {
	certFile, keyFile, pool := testcert.SelfSigned(t)
	dir := t.TempDir()
	a, b := newKey(t), newKey(t)
	fileA, fileB, rotated := filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "rotated")
	writeKeys(t, fileA, a)
	writeKeys(t, fileB, b)
	writeKeys(t, rotated, b, a)

	first := startServer(t, certFile, keyFile, fileA)
	cache := tls.NewLRUClientSessionCache(1)
	if handshake(t, first.ln.Addr().String(), pool, cache) {
		t.Fatal("the first handshake resumed")
	}
	if !handshake(t, first.ln.Addr().String(), pool, cache) {
		t.Fatal("the second handshake to the same listener did not resume")
	}
	first.close()

	ticket, _ := cache.Get("localhost")
	if ticket == nil {
		t.Fatal("no session cached for localhost")
	}
	withTicket := func() tls.ClientSessionCache {
		c := tls.NewLRUClientSessionCache(1)
		c.Put("localhost", ticket)
		return c
	}
	for _, tc := range []struct {
		name   string
		file   string
		resume bool
	}{
		{"restarted with the same key file", fileA, true},
		{"another key", fileB, false},
		{"rotated: a new first key, the old one second", rotated, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, certFile, keyFile, tc.file)
			if got := handshake(t, s.ln.Addr().String(), pool, withTicket()); got != tc.resume {
				t.Errorf("resumed %v, want %v", got, tc.resume)
			}
		})
	}
}

// TestWatchRotatesKeys: a running listener takes a changed key file in:
// once the key that issued a ticket is gone from it, the ticket no longer
// resumes.
func TestWatchRotatesKeys(t *testing.T) {
	certFile, keyFile, pool := testcert.SelfSigned(t)
	file := filepath.Join(t.TempDir(), "keys")
	writeKeys(t, file, newKey(t))
	s := startServer(t, certFile, keyFile, file)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.keys.Watch(ctx, 5*time.Millisecond)
	}()
	defer func() { cancel(); <-done }()

	cache := tls.NewLRUClientSessionCache(1)
	handshake(t, s.ln.Addr().String(), pool, cache)
	ticket, _ := cache.Get("localhost")
	writeKeys(t, file, newKey(t))
	for {
		c := tls.NewLRUClientSessionCache(1)
		c.Put("localhost", ticket)
		if !handshake(t, s.ln.Addr().String(), pool, c) {
			break
		}
		time.Sleep(10 * time.Millisecond) // the watcher has not read the file yet
	}
}
