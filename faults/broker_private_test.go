package faults

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/crypto/bcrypt"

	"firehose/internal/mqtttest"
	"firehose/internal/testenv"
)

// prClient is an MQTT 5 subscriber of the scenario: it records the topics
// of the messages it receives.
type prClient struct {
	*paho.Client
	id string

	mu     sync.Mutex
	topics map[string]int
}

func (c *prClient) received() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.topics))
	for k, v := range c.topics {
		out[k] = v
	}
	return out
}

// prConnect connects an MQTT 5 client whose client id and username are
// user. It returns the CONNACK's reason code when the server refused it.
func prConnect(t *testing.T, addr, user, password string) (*prClient, byte) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := &prClient{id: user, topics: map[string]int{}}
	c.Client = paho.NewClient(paho.ClientConfig{Conn: conn, PacketTimeout: 15 * time.Second, PingHandler: mqtttest.NoPinger{},
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.mu.Lock()
			c.topics[pr.Packet.Topic]++
			c.mu.Unlock()
			return true, nil
		}}})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: user, CleanStart: true, KeepAlive: 60,
		Username: user, UsernameFlag: true, Password: []byte(password), PasswordFlag: true})
	if err != nil {
		conn.Close()
		if ca == nil {
			t.Fatalf("MQTT 5 connect of %s: %v", user, err)
		}
		return nil, ca.ReasonCode
	}
	t.Cleanup(func() {
		select {
		case <-c.Done():
		default:
			_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
		}
	})
	return c, 0
}

// subscribe returns the SUBACK's reason code for filter at QoS 1.
func (c *prClient) subscribe(t *testing.T, filter string) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
	if sa == nil || len(sa.Reasons) != 1 {
		t.Fatalf("%s subscribes to %q: no SUBACK: %v", c.id, filter, err)
	}
	return sa.Reasons[0]
}

// TestPrivateReadings runs a fleet over MQTT with per-device passwords
// (--mqtt-auth) while a device of the test tries to read every device's
// readings — devices/+/readings, #, a shared subscription, $SYS, over MQTT
// 5 and 3.1.1 — and a dashboard user whose credentials line grants
// read=devices/+/readings subscribes to them. The device's wildcards are
// refused at SUBSCRIBE (0x87; 3.1.1 0x80) and it receives nothing but its
// own; the dashboard receives readings of every device of the fleet and
// nothing else, and may not publish readings for them; a device may not
// connect under another's client id; every acknowledged reading landed
// exactly once.
func TestPrivateReadings(t *testing.T) {
	skipShort(t)
	t.Parallel()
	dir := t.TempDir()
	run := "priv" + testenv.ID()
	devices := scale(20, 200)
	fleetPW := "pw-" + testenv.ID()
	cheap := func(pw string) string {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		return string(h)
	}
	var creds bytes.Buffer
	fleetHash := cheap(fleetPW)
	for i := 1; i <= devices; i++ {
		fmt.Fprintf(&creds, "sim-%s-%d %s\n", run, i, fleetHash)
	}
	spy, dash := "spy-"+run, "dash-"+run
	fmt.Fprintf(&creds, "%s %s\n%s-v3 %s\n%s %s read=devices/+/readings\n", spy, cheap("pw-spy"), spy, cheap("pw-spy"), dash, cheap("pw-dash"))
	credsFile := filepath.Join(dir, "devices.txt")
	edgeWriteFile(t, credsFile, creds.Bytes())
	pwFile := filepath.Join(dir, "fleet-passwords.txt")
	edgeWriteFile(t, pwFile, []byte("* "+fleetPW+"\n"))

	svc := SharedServices(t)
	s := StartStack(t, svc, "--mqtt-auth", credsFile)

	// The spy and the dashboard subscribe before the load starts.
	a, code := prConnect(t, s.MQTTAddr, spy, "pw-spy")
	if a == nil {
		t.Fatalf("the spy device could not connect: CONNACK %#x", code)
	}
	refused := 0
	for _, f := range []string{"devices/+/readings", "#", "+/+/readings", "$share/g/devices/+/readings", "$SYS/#",
		fmt.Sprintf("devices/sim-%s-1/readings", run), fmt.Sprintf("devices/sim-%s-1/#", run)} {
		if got := a.subscribe(t, f); got != 0x87 {
			t.Errorf("the spy device subscribes to %q: SUBACK %#x, want 0x87 (not authorized)", f, got)
		}
		refused++
	}
	if got := a.subscribe(t, "devices/"+spy+"/#"); got != 1 {
		t.Errorf("the spy device subscribes to its own topics: SUBACK %#x, want 1", got)
	}
	var v3Got sync.Map
	a3, err := mqtttest.ConnectV3(t, s.MQTT(), spy+"-v3", func(o *mqtt3.ClientOptions) {
		o.SetUsername(spy + "-v3").SetPassword("pw-spy").SetDefaultPublishHandler(func(_ mqtt3.Client, m mqtt3.Message) { v3Got.Store(m.Topic(), true) })
	})
	if err != nil {
		t.Fatalf("MQTT 3.1.1 connect of the spy: %v", err)
	}
	tok := a3.Subscribe("devices/+/readings", 1, nil)
	_ = tok.WaitTimeout(15 * time.Second)
	if got := tok.(*mqtt3.SubscribeToken).Result()["devices/+/readings"]; got != 0x80 {
		t.Errorf("the MQTT 3.1.1 spy subscribes to devices/+/readings: SUBACK %#x, want 0x80 (failure)", got)
	}
	refused++
	d, code := prConnect(t, s.MQTTAddr, dash, "pw-dash")
	if d == nil {
		t.Fatalf("the dashboard could not connect: CONNACK %#x", code)
	}
	if got := d.subscribe(t, "devices/+/readings"); got != 1 {
		t.Fatalf("the dashboard subscribes to its grant: SUBACK %#x, want 1", got)
	}
	if got := d.subscribe(t, "devices/+/status"); got != 0x87 {
		t.Errorf("the dashboard subscribes to statuses, not granted: SUBACK %#x, want 0x87", got)
	}
	refused++
	// Nobody takes a device's session: a client id other than the username
	// is refused.
	if c, code := prConnectAs(t, s.MQTTAddr, fmt.Sprintf("sim-%s-1", run), spy, "pw-spy"); c || code != 0x85 {
		t.Errorf("the spy connects under a fleet device's client id: CONNACK %#x, want 0x85 (client identifier not valid)", code)
	}

	l := StartLoad(t, s, LoadOpts{Devices: devices, Protocol: "mqtt", Rate: scale(200.0, 1000.0), Duration: scale(10*time.Second, 60*time.Second),
		Extra: []string{"--run-id", run, "--mqtt-password-file", pwFile, "--extra-fields", "3"}})
	// During the load: the dashboard may not publish readings for a device.
	code, ok, err := (&edgeV5{Client: d.Client, id: dash}).publish(fmt.Sprintf("devices/sim-%s-2/readings", run), []byte(`{"reading": 666}`))
	if !ok || code != 0x87 {
		t.Errorf("the dashboard publishes a reading for a fleet device: PUBACK %v %#x (%v), want 0x87", ok, code, err)
	}
	rep := l.Wait(5 * time.Minute)
	AssertExactlyOnce(t, rep, l)

	// The spy published nothing, so after the load it holds nothing but
	// what it may read; the dashboard saw every device.
	for topic := range a.received() {
		if !strings.HasPrefix(topic, "devices/"+spy+"/") {
			t.Errorf("the spy device received a message on %q", topic)
		}
	}
	v3Got.Range(func(k, _ any) bool {
		t.Errorf("the MQTT 3.1.1 spy received a message on %q", k)
		return true
	})
	seen := map[string]bool{}
	total := 0
	for topic, n := range d.received() {
		dev, ok := strings.CutSuffix(strings.TrimPrefix(topic, "devices/"), "/readings")
		if !ok || !strings.HasPrefix(topic, "devices/") {
			t.Errorf("the dashboard received a message on %q, outside its grant", topic)
			continue
		}
		seen[dev] = true
		total += n
	}
	var missing []string
	for i := 1; i <= devices; i++ {
		if dev := fmt.Sprintf("sim-%s-%d", run, i); !seen[dev] {
			missing = append(missing, dev)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("the dashboard received no reading of %d devices, e.g. %v", len(missing), missing[:min(5, len(missing))])
	}
	if n := QueryInt(t, svc.Postgres, "SELECT count(*) FROM readings WHERE device_id = $1 OR payload->>'reading' = '666'", spy); n != 0 {
		t.Errorf("%d readings of the spy or of the dashboard's refused publish landed", n)
	}
	got, _ := s.Metric("firehose_mqtt_subscriptions_refused_total")
	if int(got) != refused {
		t.Errorf("firehose_mqtt_subscriptions_refused_total = %v, want %d", got, refused)
	}
	idRefused, _ := s.Metric(`firehose_mqtt_connects_refused_total{reason="client_id"}`)
	if idRefused != 1 {
		t.Errorf(`firehose_mqtt_connects_refused_total{reason="client_id"} = %v, want 1`, idRefused)
	}

	r := ResultOf(rep)
	r.Scenario = "13. private readings"
	r.Load = LoadDesc(rep) + ", per-device passwords, a dashboard subscribed to devices/+/readings"
	r.Faults = "a device subscribing to every device's readings (devices/+/readings, #, +/+/readings, $share/g/devices/+/readings, $SYS/#, another device's topics; MQTT 5 and 3.1.1), a dashboard subscribing outside its grant and publishing a reading for a device, a device connecting under another device's client id"
	r.Notes = fmt.Sprintf("%d SUBSCRIBE filters refused (0x87, 3.1.1 0x80), the spy received nothing of the fleet; the dashboard (read=devices/+/readings) received %d readings of all %d devices and nothing else; its publish for a device refused 0x87; a foreign client id refused 0x85",
		refused, total, devices)
	Record(t, r)
}

// prConnectAs connects an MQTT 5 client with clientID and user's
// credentials and reports whether it was accepted, and the CONNACK's code.
func prConnectAs(t *testing.T, addr, clientID, user, password string) (bool, byte) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c, ca, err := edgeConnectV5(t, conn, &paho.Connect{ClientID: clientID, CleanStart: true, KeepAlive: 30,
		Username: user, UsernameFlag: true, Password: []byte(password), PasswordFlag: true})
	if c != nil {
		_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
		return true, ca.ReasonCode
	}
	if ca == nil {
		t.Fatalf("connect %s as %s: no CONNACK: %v", clientID, user, err)
	}
	return false, ca.ReasonCode
}
