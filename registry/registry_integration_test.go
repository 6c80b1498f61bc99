package registry

import (
	"context"
	"errors"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"

	"firehose/broker"
	"firehose/internal/testenv"
)

// via returns dbURL with its host replaced by addr (a proxy's).
func via(t *testing.T, dbURL, addr string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = addr
	return u.String()
}

// hostOf is the host:port of dbURL.
func hostOf(t *testing.T, dbURL string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// TestIntegrationDevicesRoundTrip runs every change of the registry: add
// (a secret once, only its hash stored), list, grant and ungrant, disable
// and enable, rotate, remove, and the errors of each.
func TestIntegrationDevicesRoundTrip(t *testing.T) {
	t.Parallel()
	db := pgConn(t, testenv.Postgres(t))
	ctx := t.Context()
	secret, err := Add(ctx, db, "pump-7", Grants{Read: []string{"devices/+/status"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(secret) < 22 {
		t.Errorf("secret %q: want at least 128 bits", secret)
	}
	if _, err := Add(ctx, db, "pump-7", Grants{}); !errors.Is(err, ErrExists) {
		t.Errorf("adding pump-7 twice: %v, want ErrExists", err)
	}
	for _, tc := range []struct {
		name string
		id   string
		g    Grants
		want string
	}{
		{"id with a slash", "a/b", Grants{}, `device id "a/b"`},
		{"bad filter", "x", Grants{Read: []string{"a/#/b"}}, "not a valid MQTT topic filter"},
		{"shared grant", "x", Grants{Write: []string{"$share/g/a"}}, "grant the filter itself"},
		{"bad group", "x", Grants{Sparkplug: []string{"STATE"}}, "not a group"},
	} {
		if _, err := Add(ctx, db, tc.id, tc.g); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Add = %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	var stored string
	if err := db.QueryRow(ctx, "SELECT secret_hash FROM firehose_devices WHERE id = 'pump-7'").Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(stored, secret) || !strings.HasPrefix(stored, "fh1$") {
		t.Errorf("stored %q: want the fh1$ hash, not the secret", stored)
	}

	if err := Grant(ctx, db, "pump-7", Grants{Read: []string{"devices/+/status", "a/#"}, Write: []string{"devices/+/commands"}, Sparkplug: []string{"plant1"}}); err != nil {
		t.Fatal(err)
	}
	if err := Ungrant(ctx, db, "pump-7", Grants{Read: []string{"devices/+/status"}}); err != nil {
		t.Fatal(err)
	}
	if err := Grant(ctx, db, "pump-7", Grants{Write: []string{"#/x"}}); err == nil {
		t.Error("Grant took a bad filter")
	}
	if err := SetEnabled(ctx, db, "pump-7", false); err != nil {
		t.Fatal(err)
	}
	ds, err := List(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 1 {
		t.Fatalf("List = %+v, want pump-7 alone", ds)
	}
	d := ds[0]
	if d.ID != "pump-7" || d.Enabled || !slices.Equal(d.Read, []string{"a/#"}) || !slices.Equal(d.Write, []string{"devices/+/commands"}) ||
		!slices.Equal(d.Sparkplug, []string{"plant1"}) || !d.LastSeen.IsZero() || d.CreatedAt.IsZero() {
		t.Errorf("List = %+v", d)
	}
	if err := SetEnabled(ctx, db, "pump-7", true); err != nil {
		t.Fatal(err)
	}
	again, err := Rotate(ctx, db, "pump-7")
	if err != nil || again == secret {
		t.Errorf("Rotate = %q, %v: want a new secret", again, err)
	}
	for name, f := range map[string]func() error{
		"SetEnabled": func() error { return SetEnabled(ctx, db, "ghost", false) },
		"Rotate":     func() error { _, err := Rotate(ctx, db, "ghost"); return err },
		"Grant":      func() error { return Grant(ctx, db, "ghost", Grants{Read: []string{"a"}}) },
		"Remove":     func() error { return Remove(ctx, db, "ghost") },
	} {
		if err := f(); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s of an unknown device: %v, want ErrNotFound", name, err)
		}
	}
	if err := Remove(ctx, db, "pump-7"); err != nil {
		t.Fatal(err)
	}
	if ds, _ := List(ctx, db); len(ds) != 0 {
		t.Errorf("List after Remove = %+v", ds)
	}
}

// TestIntegrationRegistryAdmitsAndRevokes: a device added to the registry
// connects with its secret, a wrong secret is refused 0x86; disabling,
// rotating, narrowing a grant and removing each disconnect the live client
// (0x87) as soon as the broker is told, and the secret stops working; what
// connected is written to last_seen, without a reload.
func TestIntegrationRegistryAdmitsAndRevokes(t *testing.T) {
	t.Parallel()
	dbURL := testenv.Postgres(t)
	db := pgConn(t, dbURL)
	ctx := t.Context()
	secrets := map[string]string{}
	for _, id := range []string{"dev-a", "dev-b", "dev-c", "dev-d"} {
		s, err := Add(ctx, db, id, Grants{Read: []string{"devices/+/status"}})
		if err != nil {
			t.Fatal(err)
		}
		secrets[id] = s
	}
	src, err := Open(dbURL, discard)
	if err != nil {
		t.Fatal(err)
	}
	src.SeenInterval = 100 * time.Millisecond
	if err := src.Load(ctx); err != nil {
		t.Fatal(err)
	}
	addr := startBroker(t, src)

	if code, _ := connect(t, addr, "dev-a", secrets["dev-b"]); code != codeBadCredentials {
		t.Errorf("dev-a with dev-b's secret: CONNACK %#x, want 0x86", code)
	}
	if code, _ := connect(t, addr, "ghost", secrets["dev-a"]); code != codeBadCredentials {
		t.Errorf("an unknown device: CONNACK %#x, want 0x86", code)
	}
	clients := map[string]*client{}
	for id, s := range secrets {
		clients[id] = mustConnect(t, addr, id, s)
	}
	testenv.Eventually(t, 5*time.Second, func() bool {
		return testenv.QueryInt(t, dbURL, "SELECT count(*) FROM firehose_devices WHERE last_seen IS NOT NULL") == 4
	}, "last_seen of the 4 connected devices not written")

	for _, tc := range []struct {
		name, id string
		change   func() error
	}{
		{"disable", "dev-a", func() error { return SetEnabled(ctx, db, "dev-a", false) }},
		{"rotate", "dev-b", func() error { var err error; secrets["dev-b+"], err = Rotate(ctx, db, "dev-b"); return err }},
		{"narrow a grant", "dev-c", func() error { return Ungrant(ctx, db, "dev-c", Grants{Read: []string{"devices/+/status"}}) }},
		{"remove", "dev-d", func() error { return Remove(ctx, db, "dev-d") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			if err := tc.change(); err != nil {
				t.Fatal(err)
			}
			c := clients[tc.id]
			testenv.Eventually(t, time.Second, c.disconnected, "%s: the live client of %s was not disconnected", tc.name, tc.id)
			t.Logf("%s: %s disconnected %s after the change", tc.name, tc.id, time.Since(start).Round(time.Millisecond))
			if r := c.reason.Load(); r != codeNotAuthorized {
				t.Errorf("%s: DISCONNECT reason %#x, want 0x87", tc.name, r)
			}
		})
	}
	for id, want := range map[string]byte{"dev-a": codeBadCredentials, "dev-b": codeBadCredentials, "dev-d": codeBadCredentials} {
		if code, _ := connect(t, addr, id, secrets[id]); code != want {
			t.Errorf("%s after its change, with its old secret: CONNACK %#x, want %#x", id, code, want)
		}
	}
	mustConnect(t, addr, "dev-b", secrets["dev-b+"])
	mustConnect(t, addr, "dev-c", secrets["dev-c"]) // its grant narrowed, its secret stands
	if err := SetEnabled(ctx, db, "dev-a", true); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 2*time.Second, func() bool {
		code, c := connect(t, addr, "dev-a", secrets["dev-a"])
		if c != nil {
			_ = c.Disconnect(&paho.Disconnect{})
		}
		return code == 0
	}, "dev-a, enabled again, cannot connect")
}

// TestIntegrationSourceWatch: the watch reloads on a change, not on the
// brokers' writes of last_seen, and reads everything again after losing
// PostgreSQL: a change made while it was away arrives when it is back.
func TestIntegrationSourceWatch(t *testing.T) {
	t.Parallel()
	dbURL := testenv.Postgres(t)
	db := pgConn(t, dbURL)
	ctx := t.Context()
	if _, err := Add(ctx, db, "dev-1", Grants{}); err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, hostOf(t, dbURL))
	src, err := Open(via(t, dbURL, p.Addr()), discard)
	if err != nil {
		t.Fatal(err)
	}
	src.SeenInterval, src.MaxBackoff = 50*time.Millisecond, 200*time.Millisecond
	var changes atomic.Int64
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		src.Watch(wctx, func(old, cur broker.Credentials) { changes.Add(1) })
	}()
	t.Cleanup(func() { cancel(); <-done })
	testenv.Eventually(t, 2*time.Second, func() bool { return changes.Load() == 1 }, "the first load did not happen")
	if len(src.Credentials()) != 1 {
		t.Fatalf("loaded %v, want dev-1", src.Credentials())
	}

	src.Connected("dev-1")
	testenv.Eventually(t, 2*time.Second, func() bool {
		return testenv.QueryInt(t, dbURL, "SELECT count(*) FROM firehose_devices WHERE last_seen IS NOT NULL") == 1
	}, "last_seen of dev-1 not written")
	if _, err := Add(ctx, db, "dev-2", Grants{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Second, func() bool { _, ok := src.Credentials()["dev-2"]; return ok }, "dev-2 was not loaded")
	if n := changes.Load(); n != 2 {
		t.Errorf("%d loads after one change and a write of last_seen, want 2", n)
	}

	p.Down()
	if _, err := Add(ctx, db, "dev-3", Grants{}); err != nil {
		t.Fatal(err)
	}
	// While PostgreSQL is unreachable the last version stays in use.
	if len(src.Credentials()) != 2 {
		t.Errorf("while PostgreSQL is unreachable: %d devices, want the 2 loaded", len(src.Credentials()))
	}
	p.Up()
	testenv.Eventually(t, 2*time.Second, func() bool { _, ok := src.Credentials()["dev-3"]; return ok },
		"dev-3, added while the registry was unreachable, was not loaded once it was back")
}

// TestIntegrationRegistryDownAndNeverLoaded: a broker whose registry never
// loaded answers every CONNECT 0x88 server unavailable, and admits once
// PostgreSQL answers; with PostgreSQL gone after that, it keeps admitting
// from what it loaded, and a change made meanwhile reaches it once
// PostgreSQL is back.
func TestIntegrationRegistryDownAndNeverLoaded(t *testing.T) {
	t.Parallel()
	dbURL := testenv.Postgres(t)
	db := pgConn(t, dbURL)
	ctx := t.Context()
	secret, err := Add(ctx, db, "dev-1", Grants{})
	if err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, hostOf(t, dbURL))
	p.Down()
	src, err := Open(via(t, dbURL, p.Addr()), discard)
	if err != nil {
		t.Fatal(err)
	}
	src.MaxBackoff = 200 * time.Millisecond
	if err := src.Load(ctx); err == nil {
		t.Fatal("Load through a proxy that is down succeeded")
	}
	addr := startBroker(t, src)
	if code, _ := connect(t, addr, "dev-1", secret); code != codeServerUnavailable {
		t.Errorf("CONNECT before the registry ever loaded: CONNACK %#x, want 0x88", code)
	}
	p.Up()
	testenv.Eventually(t, 2*time.Second, func() bool {
		code, c := connect(t, addr, "dev-1", secret)
		if code != 0 && code != codeServerUnavailable {
			t.Fatalf("CONNECT while the registry loads: CONNACK %#x", code)
		}
		if c != nil {
			_ = c.Disconnect(&paho.Disconnect{})
		}
		return code == 0
	}, "dev-1 not admitted once PostgreSQL answered")

	p.Down()
	code, c := connect(t, addr, "dev-1", secret)
	if code != 0 {
		t.Fatalf("CONNECT with PostgreSQL gone after the load: CONNACK %#x, want 0", code)
	}
	if err := SetEnabled(ctx, db, "dev-1", false); err != nil {
		t.Fatal(err)
	}
	if c.disconnected() {
		t.Error("disconnected while the registry was unreachable")
	}
	p.Up()
	testenv.Await(t, c.disconnected, "dev-1, disabled while PostgreSQL was unreachable, not disconnected once it was back")
}
