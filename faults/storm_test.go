package faults

// The reconnect storm (issue 20): a fleet connected to the edge over TLS,
// the edge restarted (SIGTERM, then the same command on the same ports), and
// every device reconnecting at once. Measured: how long until the whole
// fleet is admitted again, and the CPU the new serve process spent on it;
// asserted: every device back and publishing, nothing acknowledged lost.

import (
	"cmp"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/bcrypt"

	"firehose/internal/testcert"
	"firehose/internal/testenv"
)

// Modes of the storm: how the fleet proves who it is.
const (
	// stormBcrypt: the credentials file (--mqtt-auth FILE) of bcrypt hashes,
	// what firehose mqttpasswd makes.
	stormBcrypt = "bcrypt-file"
	// stormCert: a client certificate each (ECDSA P-256, signed by the test
	// PKI's CA), --mqtt-tls-client-ca with a CRL; no password.
	stormCert = "client-cert"
	// stormSecretFile: the credentials file with device secrets (fh1$
	// hashes, checked in microseconds).
	stormSecretFile = "secret-file"
	// stormRegistry: device secrets in the registry (--mqtt-auth postgres,
	// the table firehose_devices).
	stormRegistry = "registry"
)

// stormModes are every mode, in the order of the bench's table.
var stormModes = []string{stormBcrypt, stormCert, stormSecretFile, stormRegistry}

// stormAssembleParallel bounds the connections the fleet makes at once when
// it first connects (see stormRun).
const stormAssembleParallel = 500

// stormTimeout is the devices' wait for a CONNACK (and a PUBACK) before they
// give up and retry: 10 s, as the issue measured; FIREHOSE_STORM_TIMEOUT
// sets another.
func stormTimeout() string {
	if d, err := time.ParseDuration(os.Getenv("FIREHOSE_STORM_TIMEOUT")); err == nil && d > 0 {
		return d.String()
	}
	return "10s"
}

// stormOpts shape one storm.
type stormOpts struct {
	devices int
	// bcryptCost is the cost of the bcrypt hashes the restarted serve
	// reads (the first start reads device-secret hashes of the same
	// password, so that assembling the fleet does not take as long as the
	// storm).
	bcryptCost int
	// cap bounds the wait for the fleet to be back; 0: until the test's
	// deadline, and not all back fails the test.
	cap time.Duration
	// kex is the simulator's --tls-key-exchange ("": its default, hybrid).
	kex string
	// resume runs serve with --mqtt-tls-ticket-keys (a key file of the
	// storm's own, the same for both processes), so that the devices
	// (simulate --tls-resume, its default) resume their TLS sessions after
	// the restart. Off: tickets die with the process, full handshakes.
	resume bool
}

// stormResult is what one storm measured.
type stormResult struct {
	mode       string
	devices    int
	readmitted int           // connected when the wait ended
	all        bool          // every device was back before the cap
	outage     time.Duration // from SIGTERM to the new process's start
	fromStart  time.Duration // from the new process's start to the whole fleet connected (or the cap)
	fromReady  time.Duration // the same from /readyz answering 200
	publishing time.Duration // from the new process's start to a reading of every device landed
	serveCPU   float64       // CPU seconds of the new serve process, from its start to fromStart
	simCPU     float64       // CPU seconds of the simulator over the same window
	checks     float64       // bcrypt comparisons the new process ran
	resumed    float64       // TLS handshakes of the new process that resumed a session
	refused    float64       // CONNECTs it refused, every reason
	lost       int64         // acknowledged readings missing
}

// admittedPerS is the admission rate from readiness on.
func (r stormResult) admittedPerS() float64 {
	if r.fromReady <= 0 {
		return 0
	}
	return float64(r.readmitted) / r.fromReady.Seconds()
}

// TestStorm restarts the edge under a fleet connected over TLS, once for
// each way of proving a device's identity, and waits until every device is
// admitted again and has published through the new process; nothing
// acknowledged may be lost. The time to readmit is reported, not asserted
// (make faults' long form: 10,000 devices, bcrypt at its default cost; the
// short form: 500 devices and bcrypt at its lowest cost, so that the short
// form stays short — at cost 10 one core admits ~17 devices a second).
func TestStorm(t *testing.T) {
	skipShort(t)
	t.Parallel()
	o := stormOpts{devices: scale(500, 10_000), bcryptCost: scale(bcrypt.MinCost, bcrypt.DefaultCost)}
	if n, err := strconv.Atoi(os.Getenv("FIREHOSE_STORM_DEVICES")); err == nil && n > 0 {
		o.devices = n
	}
	for _, mode := range stormModes {
		t.Run(mode, func(t *testing.T) {
			r := stormRun(t, mode, o)
			t.Logf("%s: %d devices back %.2f s after the new serve started (%.2f s after ready; outage %.2f s); every one published through it after %.2f s; serve CPU %.2f s, simulator CPU %.2f s, bcrypt checks %.0f, refused %.0f",
				mode, r.devices, r.fromStart.Seconds(), r.fromReady.Seconds(), r.outage.Seconds(), r.publishing.Seconds(), r.serveCPU, r.simCPU, r.checks, r.refused)
		})
	}
}

// TestStormBench is scripts/bench-storm.sh: ROUNDS rounds of every mode,
// alternating, each wait capped; it writes a markdown table to
// FIREHOSE_STORM_TABLE. Skipped unless FIREHOSE_STORM_BENCH is set.
//
//	FIREHOSE_STORM_BENCH=1 FIREHOSE_STORM_DEVICES=10000 FIREHOSE_STORM_ROUNDS=2 \
//	  FIREHOSE_STORM_CAP=120s FIREHOSE_STORM_MODES=bcrypt-file,client-cert FIREHOSE_STORM_RESUME=off,on \
//	  go test -count=1 -timeout 0 -run '^TestStormBench$' ./faults/
func TestStormBench(t *testing.T) {
	if os.Getenv("FIREHOSE_STORM_BENCH") == "" {
		t.Skip("the storm bench: scripts/bench-storm.sh (FIREHOSE_STORM_BENCH=1)")
	}
	o := stormOpts{devices: 10_000, bcryptCost: bcrypt.DefaultCost, cap: 120 * time.Second}
	rounds := 1
	if n, err := strconv.Atoi(os.Getenv("FIREHOSE_STORM_DEVICES")); err == nil && n > 0 {
		o.devices = n
	}
	if n, err := strconv.Atoi(os.Getenv("FIREHOSE_STORM_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	if d, err := time.ParseDuration(os.Getenv("FIREHOSE_STORM_CAP")); err == nil && d > 0 {
		o.cap = d
	}
	modes := stormModes
	if m := os.Getenv("FIREHOSE_STORM_MODES"); m != "" {
		modes = strings.Split(m, ",")
	}
	kexes := []string{""}
	if k := os.Getenv("FIREHOSE_STORM_KEX"); k != "" {
		kexes = strings.Split(k, ",")
	}
	resumes := []string{"off"}
	if r := os.Getenv("FIREHOSE_STORM_RESUME"); r != "" {
		resumes = strings.Split(r, ",")
	}
	var results []stormResult
	for round := 1; round <= rounds; round++ {
		for _, kex := range kexes {
			for _, resume := range resumes {
				for _, mode := range modes {
					o := o
					o.kex, o.resume = kex, resume == "on"
					t.Run(fmt.Sprintf("%s/%s/resume-%s/round-%d", mode, cmp.Or(kex, "hybrid"), resume, round), func(t *testing.T) {
						results = append(results, stormRun(t, mode, o))
					})
				}
			}
		}
	}
	table := stormTable(results, o)
	t.Logf("\n%s", table)
	if path := os.Getenv("FIREHOSE_STORM_TABLE"); path != "" {
		if err := os.WriteFile(path, []byte(table), 0o644); err != nil {
			t.Error(err)
		}
	}
}

// stormFleet is one storm's set-up: the devices, the PKI, where files go.
type stormFleet struct {
	t       *testing.T
	run     string
	devices int
	dir     string
	pki     *testcert.PKI
	svc     Services
}

func (f *stormFleet) id(i int) string { return fmt.Sprintf("sim-%s-%d", f.run, i) }

// stormCreds is how a mode runs: serve's and the simulator's flags, and
// what to change while serve is down.
type stormCreds struct {
	serve, sim    []string
	beforeRestart func()
}

// stormRun runs one storm of mode and returns what it measured; with
// o.cap 0 it fails t unless every device came back.
func stormRun(t *testing.T, mode string, o stormOpts) stormResult {
	t.Helper()
	svc := SharedServices(t)
	f := &stormFleet{t: t, run: "storm" + testenv.ID(), devices: o.devices, dir: t.TempDir(), pki: testcert.NewPKI(t), svc: svc}
	var c stormCreds
	switch mode {
	case stormBcrypt:
		c = f.bcryptFile(o.bcryptCost)
	case stormCert:
		c = f.clientCerts()
	case stormSecretFile:
		c = f.secretFile()
	case stormRegistry:
		c = f.registry()
	default:
		t.Fatalf("storm mode %q: want one of %v", mode, stormModes)
	}
	if o.resume {
		c.serve = append(c.serve, "--mqtt-tls-ticket-keys", f.ticketKeys())
	}
	tlsAddr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	s := StartStack(t, svc, append([]string{"--mqtt-addr", "", "--mqtt-tls-addr", tlsAddr,
		"--mqtt-tls-cert", f.pki.ServerCert, "--mqtt-tls-key", f.pki.ServerKey}, c.serve...)...)
	// Every device sends a reading every 5 s: at most that after its
	// readmission, it has published through the new process.
	//
	// The fleet assembles at most stormAssembleParallel connections at a
	// time: the simulator fails a run of which one device cannot make its
	// first connection in 10 s, and 10,000 TLS handshakes at once on 2
	// cores take longer for some (the listen queue overflows: see
	// RELIABILITY.md). The storm does not depend on it: after
	// the restart every device reconnects at once by itself (the MQTT
	// client's automatic reconnect, retrying after 1 s, then 2 s), and a
	// device that times out then simply retries.
	l := StartLoad(t, s, LoadOpts{Devices: o.devices, Protocol: "mqtt", Rate: float64(o.devices) / 5, Duration: 2 * time.Hour,
		Extra: append([]string{"--run-id", f.run, "--connect-parallel", strconv.Itoa(min(o.devices, stormAssembleParallel)), "--timeout", stormTimeout(),
			"--mqtt", "ssl://" + tlsAddr, "--ca-file", f.pki.CA, "--tls-key-exchange", cmp.Or(o.kex, "hybrid")}, c.sim...)})
	prefix := "sim-" + f.run + "-"

	// The fleet is up: every device connected and landed a reading.
	testenv.Await(t, func() bool {
		if l.proc.Exited() {
			t.Fatalf("the simulator ended before the storm; output:\n%s", l.Output())
		}
		n, _ := s.Metric("firehose_mqtt_clients_connected")
		return int(n) >= o.devices
	}, "the fleet of %d did not connect; simulator output:\n%s", o.devices, edgeLazy(l.Output))
	stormAwaitPublished(t, svc.Postgres, prefix, time.Time{}, o.devices)

	// The restart.
	r := stormResult{mode: mode, devices: o.devices}
	if o.kex != "" {
		r.mode += ", " + o.kex + " key exchange"
	}
	if o.resume {
		r.mode += ", ticket keys"
	}
	down := time.Now()
	s.Stop(2 * time.Minute)
	if c.beforeRestart != nil {
		c.beforeRestart()
	}
	start := time.Now()
	r.outage = start.Sub(down)
	s.Proc = StartProc(t, "firehose serve", binary, s.Args...)
	simCPU0 := procCPU(l.proc.Pid())
	var ready time.Time
	deadline := time.Now().Add(o.cap)
	if o.cap == 0 {
		deadline, _ = t.Deadline()
		if deadline.IsZero() {
			deadline = time.Now().Add(time.Hour)
		}
		deadline = deadline.Add(-30 * time.Second)
	}
	client := &http.Client{Timeout: 5 * time.Second}
	for {
		if s.Proc.Exited() {
			t.Fatalf("the restarted firehose exited: %s", s.Proc.Output())
		}
		if ready.IsZero() && stormReady(client, s) {
			ready = time.Now()
		}
		n, _ := stormMetric(client, s, "firehose_mqtt_clients_connected")
		now := time.Now()
		r.readmitted = int(n)
		if int(n) >= o.devices || now.After(deadline) {
			r.all = int(n) >= o.devices
			r.fromStart = now.Sub(start)
			if !ready.IsZero() {
				r.fromReady = now.Sub(ready)
			}
			r.serveCPU = procCPU(s.Proc.Pid())
			r.simCPU = procCPU(l.proc.Pid()) - simCPU0
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.checks, _ = stormMetric(client, s, "firehose_mqtt_auth_password_checks_total")
	r.refused, _ = stormMetric(client, s, "firehose_mqtt_connects_refused_total")
	r.resumed, _ = stormMetric(client, s, `firehose_mqtt_tls_handshakes_total{result="ok",resumed="true"}`)
	if !r.all && o.cap == 0 {
		t.Fatalf("%d of %d devices back after %s; simulator output:\n%s", r.readmitted, o.devices, r.fromStart, l.Output())
	}
	if r.all {
		// Admitted is not enough: each device published through the new
		// process, and what it published landed.
		stormAwaitPublished(t, svc.Postgres, prefix, start, o.devices)
		r.publishing = time.Since(start)
	}

	l.Interrupt()
	rep := l.Wait(10 * time.Minute)
	AssertExactlyOnce(t, rep, l)
	if rep.Landing != nil {
		r.lost = rep.Landing.Missing
	}
	res := ResultOf(rep)
	res.Scenario = "21. reconnect storm: " + mode
	res.Load = LoadDesc(rep) + ", over TLS, every device reconnecting at once"
	res.Faults = "serve (every role) restarted: SIGTERM, then the same command on the same ports; the whole fleet reconnects at once"
	if mode == stormBcrypt {
		res.Faults += fmt.Sprintf(" (the restarted serve reads bcrypt hashes at cost %d)", o.bcryptCost)
	}
	if o.resume {
		res.Faults += "; serve shares a session ticket key file (--mqtt-tls-ticket-keys) across the restart"
	}
	res.Notes = fmt.Sprintf("%d of %d back %.2f s after the new process started (%.2f s after ready, %.0f admitted/s; outage before it %.2f s); every device published through it after %.2f s; new serve CPU %.2f s, simulator CPU %.2f s; %.0f bcrypt checks, %.0f CONNECTs refused, %.0f TLS sessions resumed",
		r.readmitted, o.devices, r.fromStart.Seconds(), r.fromReady.Seconds(), r.admittedPerS(), r.outage.Seconds(), r.publishing.Seconds(), r.serveCPU, r.simCPU, r.checks, r.refused, r.resumed)
	Record(t, res)
	return r
}

// stormAwaitPublished waits until every device of the run has a reading
// received after since in PostgreSQL.
func stormAwaitPublished(t *testing.T, dbURL, prefix string, since time.Time, devices int) {
	t.Helper()
	testenv.Await(t, func() bool {
		n := QueryInt(t, dbURL, `SELECT count(DISTINCT device_id) FROM readings WHERE device_id LIKE $1 || '%' AND received_at > $2`, prefix, since)
		return int(n) >= devices
	}, "not every device of %s published after %s", prefix, since)
}

// stormReady reports whether /readyz answers 200.
func stormReady(c *http.Client, s *Stack) bool {
	resp, err := c.Get(s.HTTP() + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// stormMetric sums the samples of one metric, over all its labels.
func stormMetric(c *http.Client, s *Stack, name string) (float64, bool) {
	resp, err := c.Get(s.HTTP() + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	var b strings.Builder
	if _, err := io.Copy(&b, resp.Body); err != nil {
		return 0, false
	}
	sum, found := 0.0, false
	for _, line := range strings.Split(b.String(), "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest == "" || (rest[0] != ' ' && rest[0] != '{')) {
			continue
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(f[0], 64); err == nil {
			sum, found = sum+v, true
		}
	}
	return sum, found
}

// procCPU is a process's CPU time so far in seconds (utime+stime of
// /proc/PID/stat, as internal/benchtools/proccpu reads it), 0 when gone.
func procCPU(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime 14, stime 15.
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100 // USER_HZ
}

// bcryptFile writes the credentials file with a line per device, every
// device with the same password: the cost is per device anyway (a password
// that passed is remembered per device, for the life of the process). The
// first start reads device-secret (fh1$) hashes of that password; the
// restarted serve reads bcrypt hashes at cost.
func (f *stormFleet) bcryptFile(cost int) stormCreds {
	t := f.t
	pw := "pw-" + testenv.ID() + testenv.ID()
	path := filepath.Join(f.dir, "devices.txt")
	write := func(h []byte) {
		var b strings.Builder
		for i := 1; i <= f.devices; i++ {
			fmt.Fprintf(&b, "%s %s\n", f.id(i), h)
		}
		edgeWriteFile(t, path, []byte(b.String()))
	}
	// The fleet assembles against the device-secret hash of the same
	// password (a check in microseconds): even bcrypt's lowest cost, behind
	// the bound on connects waiting for it, keeps some of 10,000 devices
	// out past the simulator's patience on a busy box.
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		t.Fatal(err)
	}
	write([]byte(stormSecretHash(salt, pw)))
	return stormCreds{serve: []string{"--mqtt-auth", path}, sim: []string{"--mqtt-password", pw}, beforeRestart: func() {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), cost)
		if err != nil {
			t.Fatal(err)
		}
		write(h)
	}}
}

// clientCerts issues a certificate each (ECDSA P-256, clientAuth, CN the
// device id) from the PKI's CA, in this process: openssl takes tens of
// milliseconds a certificate, minutes for a fleet of 10,000.
func (f *stormFleet) clientCerts() stormCreds {
	t := f.t
	caCert, caKey := stormLoadCA(t, f.pki)
	dir := filepath.Join(f.dir, "certs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for i := 1; i <= f.devices; i++ {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber:          serial,
			Subject:               pkix.Name{CommonName: f.id(i)},
			NotBefore:             now.Add(-time.Hour),
			NotAfter:              now.Add(24 * time.Hour),
			KeyUsage:              x509.KeyUsageDigitalSignature,
			ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			BasicConstraintsValid: true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		base := filepath.Join(dir, f.id(i))
		if err := os.WriteFile(base+".pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(base+".key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return stormCreds{
		serve: []string{"--mqtt-tls-client-ca", f.pki.CA, "--mqtt-tls-crl", f.pki.CRL},
		sim:   []string{"--mqtt-cert", filepath.Join(dir, "{device_id}.pem"), "--mqtt-key", filepath.Join(dir, "{device_id}.key")},
	}
}

// ticketKeys writes a session ticket key file of one random key, as
// openssl rand -hex 32 makes, and returns its path.
func (f *stormFleet) ticketKeys() string {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		f.t.Fatal(err)
	}
	path := filepath.Join(f.dir, "ticket-keys")
	edgeWriteFile(f.t, path, []byte(hex.EncodeToString(key)+"\n"))
	return path
}

// stormLoadCA reads the PKI's CA certificate and key (openssl's PKCS #8 or
// SEC 1 EC key).
func stormLoadCA(t *testing.T, p *testcert.PKI) (*x509.Certificate, any) {
	t.Helper()
	read := func(path string) []byte {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			t.Fatalf("%s: no PEM block", path)
		}
		return blk.Bytes
	}
	cert, err := x509.ParseCertificate(read(p.CA))
	if err != nil {
		t.Fatal(err)
	}
	keyDER := read(filepath.Join(p.Dir, "ca.key"))
	if key, err := x509.ParsePKCS8PrivateKey(keyDER); err == nil {
		return cert, key
	}
	key, err := x509.ParseECPrivateKey(keyDER)
	if err != nil {
		t.Fatalf("the CA's key: %v", err)
	}
	return cert, key
}

// stormSecrets makes a device secret each (192 random bits, as firehose
// devices add makes them), writes the simulator's password file, and
// returns each device's stored hash.
func (f *stormFleet) stormSecrets() (hashes []string, pwFile string) {
	t := f.t
	var pw strings.Builder
	for i := 1; i <= f.devices; i++ {
		b := make([]byte, 24)
		salt := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		if _, err := rand.Read(salt); err != nil {
			t.Fatal(err)
		}
		secret := base64.RawURLEncoding.EncodeToString(b)
		hashes = append(hashes, stormSecretHash(salt, secret))
		fmt.Fprintf(&pw, "%s %s\n", f.id(i), secret)
	}
	pwFile = filepath.Join(f.dir, "secrets.txt")
	edgeWriteFile(t, pwFile, []byte(pw.String()))
	return hashes, pwFile
}

// stormSecretHash is a device secret's stored form, as docs/devices.md
// gives it: fh1$<salt>$<HMAC-SHA256(salt, secret)>, unpadded base64url.
func stormSecretHash(salt []byte, secret string) string {
	m := hmac.New(sha256.New, salt)
	m.Write([]byte(secret))
	b64 := base64.RawURLEncoding
	return "fh1$" + b64.EncodeToString(salt) + "$" + b64.EncodeToString(m.Sum(nil))
}

// migrate creates the database's tables, the registry's firehose_devices
// among them, as firehose migrate does.
func (f *stormFleet) migrate() {
	out, err := exec.Command(binary, "migrate", "--postgres", f.svc.Postgres).CombinedOutput()
	if err != nil {
		f.t.Fatalf("firehose migrate: %v: %s", err, out)
	}
}

// secretFile writes the credentials file with a device secret's hash a
// device.
func (f *stormFleet) secretFile() stormCreds {
	f.migrate()
	hashes, pwFile := f.stormSecrets()
	var b strings.Builder
	for i, h := range hashes {
		fmt.Fprintf(&b, "%s %s\n", f.id(i+1), h)
	}
	path := filepath.Join(f.dir, "devices.txt")
	edgeWriteFile(f.t, path, []byte(b.String()))
	return stormCreds{serve: []string{"--mqtt-auth", path}, sim: []string{"--mqtt-password-file", pwFile}}
}

// registry provisions the fleet in the registry as a provisioning system
// would (docs/devices.md: it may write the table itself), in one COPY.
func (f *stormFleet) registry() stormCreds {
	f.migrate()
	hashes, pwFile := f.stormSecrets()
	t := f.t
	ctx, conn, done := dbConn(t, f.svc.Postgres, time.Minute)
	defer done()
	n, err := conn.CopyFrom(ctx, pgx.Identifier{"firehose_devices"}, []string{"id", "secret_hash"},
		pgx.CopyFromSlice(len(hashes), func(i int) ([]any, error) { return []any{f.id(i + 1), hashes[i]}, nil }))
	if err != nil || int(n) != len(hashes) {
		t.Fatalf("provision %d devices in firehose_devices: %d rows, %v", len(hashes), n, err)
	}
	return stormCreds{serve: []string{"--mqtt-auth", "postgres"}, sim: []string{"--mqtt-password-file", pwFile}}
}

// stormTable is the bench's markdown table: a row a storm, in the order
// run, and the median of each mode against bcrypt's.
func stormTable(results []stormResult, o stormOpts) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| mode | round | back / devices | time to readmit all, from start (s) | from ready (s) | admitted/s | serve CPU (s) | serve cores | simulator CPU (s) | bcrypt checks | TLS resumed | lost |\n")
	fmt.Fprintf(&b, "|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	round := map[string]int{}
	for _, r := range results {
		round[r.mode]++
		back := fmt.Sprintf("%.2f", r.fromStart.Seconds())
		if !r.all {
			back = fmt.Sprintf("> %.0f (cap)", r.fromStart.Seconds())
		}
		cores := 0.0
		if r.fromStart > 0 {
			cores = r.serveCPU / r.fromStart.Seconds()
		}
		fmt.Fprintf(&b, "| %s | %d | %d / %d | %s | %.2f | %.1f | %.2f | %.2f | %.2f | %.0f | %.0f | %d |\n",
			r.mode, round[r.mode], r.readmitted, r.devices, back, r.fromReady.Seconds(), r.admittedPerS(), r.serveCPU, cores, r.simCPU, r.checks, r.resumed, r.lost)
	}
	// Medians against bcrypt. A capped storm counts as the cap: its time
	// is longer, so the ratio is a lower bound ("> Nx").
	med := func(mode string, f func(stormResult) float64) (float64, bool) {
		var v []float64
		for _, r := range results {
			if r.mode == mode {
				v = append(v, f(r))
			}
		}
		if len(v) == 0 {
			return 0, false
		}
		sort.Float64s(v)
		return v[(len(v)-1)/2], true
	}
	timeOf := func(r stormResult) float64 { return r.fromStart.Seconds() }
	capped := func(mode string) bool {
		return slices.ContainsFunc(results, func(r stormResult) bool { return r.mode == mode && !r.all })
	}
	var modes []string // as labelled (with the key exchange), in the order run
	for _, r := range results {
		if !slices.Contains(modes, r.mode) {
			modes = append(modes, r.mode)
		}
	}
	bcryptMode := stormBcrypt
	if i := slices.IndexFunc(modes, func(m string) bool { return strings.HasPrefix(m, stormBcrypt) }); i >= 0 {
		bcryptMode = modes[i]
	}
	base, ok := med(bcryptMode, timeOf)
	if !ok {
		return b.String()
	}
	fmt.Fprintf(&b, "\nMedian time to readmit all, from the start of the new process, against the bcrypt file (cost %d) in the same run", o.bcryptCost)
	if capped(bcryptMode) {
		fmt.Fprintf(&b, " (bcrypt not back within the cap, %s: counted as the cap, so its ratios are lower bounds)", o.cap)
	}
	b.WriteString(":\n\n| mode | time (s) | faster than bcrypt | serve CPU (s) |\n|---|---|---|---|\n")
	for _, mode := range modes {
		tm, ok := med(mode, timeOf)
		if !ok {
			continue
		}
		cpu, _ := med(mode, func(r stormResult) float64 { return r.serveCPU })
		ts, ratio := fmt.Sprintf("%.2f", tm), fmt.Sprintf("%.1fx", base/tm)
		if capped(mode) {
			ts = "> " + ts
		}
		if capped(bcryptMode) && mode != bcryptMode {
			ratio = "> " + ratio
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %.2f |\n", mode, ts, ratio, cpu)
	}
	return b.String()
}
