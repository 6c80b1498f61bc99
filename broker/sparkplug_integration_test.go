package broker

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"firehose/ingest"
	"firehose/sparkplug"
)

// TestIntegrationSparkplug publishes, through the broker into PostgreSQL,
// the Sparkplug B messages that Eclipse Tahu's own encoder (the npm package
// sparkplug-payload, sparkplug/testdata) made: births with aliases and
// alias-only data, every datatype's edge values, a DATA before its BIRTH, an
// unknown alias, a seq gap, device births and deaths. Every metric value of
// a message that resolves lands as a row (device group/edge[/device], metric
// its name), each birth and death as a row of its own; a message that does
// not resolve (before its birth, an unknown alias) is an edge dead letter,
// none of its values a row; and an edge node whose DATA could not be
// resolved is sent a Rebirth request (NCMD), which a subscriber receives.
func TestIntegrationSparkplug(t *testing.T) {
	t.Parallel()
	dir := filepath.Join("..", "sparkplug", "testdata")
	data, err := os.ReadFile(filepath.Join(dir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var want struct {
		Scenarios []struct {
			Name  string
			Steps []struct {
				Topic, File, Rebirth string
				Values               []struct {
					Null bool
				}
			}
		}
	}
	if err := json.Unmarshal(data, &want); err != nil {
		t.Fatal(err)
	}
	lim := ingest.Limits{MaxAge: 20 * 365 * 24 * time.Hour} // the fixtures are of 2023
	s := newStack(t, stackOptions{bridge: true, cfg: Config{Sparkplug: true, Limits: lim}})
	sub := mustConnectV5(t, s.tcpAddr(), "scada")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "spBv1.0/+/NCMD/+", QoS: 0}}}); err != nil {
		t.Fatal(err)
	}
	edge := mustConnectV5(t, s.tcpAddr(), "edge")
	rows, deadLetters := 0, 0
	rebirthsFor := map[string]bool{}
	for _, sc := range want.Scenarios {
		for _, st := range sc.Steps {
			payload, err := os.ReadFile(filepath.Join(dir, "fixtures", st.File))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := edge.Publish(ctx, &paho.Publish{Topic: st.Topic, QoS: 1, Payload: payload})
			if resp == nil || resp.ReasonCode != 0 {
				t.Fatalf("%s %s: %+v %v", sc.Name, st.File, resp, err)
			}
			if st.Rebirth == "not born" || st.Rebirth == "unknown alias" {
				// Stored whole as an edge dead letter, none of its
				// values as rows.
				deadLetters++
				st.Values = nil
			}
			for _, v := range st.Values {
				if !v.Null {
					rows++
				}
			}
			tp, _ := sparkplug.ParseTopic(st.Topic)
			switch tp.Type {
			case sparkplug.NBIRTH, sparkplug.DBIRTH, sparkplug.NDEATH, sparkplug.DDEATH:
				rows++
			}
			if st.Rebirth != "" {
				rebirthsFor["spBv1.0/"+tp.Group+"/NCMD/"+tp.EdgeNode] = true
			}
		}
	}
	s.settle(rows, 15*time.Second)
	if got := s.count("SELECT count(*) FROM readings"); got != rows {
		t.Errorf("%d rows, want %d", got, rows)
	}
	if got := len(s.deadLetters(deadLetters)); got != deadLetters {
		t.Errorf("%d edge dead letters, want %d", got, deadLetters)
	}
	for _, q := range []struct {
		sql  string
		want int
	}{
		{"SELECT count(*) FROM readings WHERE device_id = 'plant1/edge1' AND metric = 'Int8/min' AND reading = -128", 1},
		{"SELECT count(*) FROM readings WHERE metric = 'sparkplug/NBIRTH'", 7},
		{"SELECT count(*) FROM readings WHERE device_id LIKE '%/%/%' AND metric = 'sparkplug/DBIRTH'", 2},
		{"SELECT count(*) FROM readings WHERE payload->>'datatype' = 'String' AND payload ? 'value'", -1}, // at least one
	} {
		if got := s.count(q.sql); (q.want < 0 && got < 1) || (q.want >= 0 && got != q.want) {
			t.Errorf("%s = %d, want %d", q.sql, got, q.want)
		}
	}
	t.Logf("%d scenarios of Tahu-encoded messages: %d rows landed", len(want.Scenarios), rows)
	// A Rebirth request reached every edge node that needed one.
	deadline := time.After(10 * time.Second)
	for len(rebirthsFor) > 0 {
		select {
		case pb := <-sub.received:
			if rebirthsFor[pb.Topic] {
				p, err := sparkplug.DecodePayload(pb.Payload)
				if err != nil || len(p.Metrics) == 0 || p.Metrics[0].Name != "Node Control/Rebirth" {
					t.Errorf("NCMD on %s: %+v %v", pb.Topic, p, err)
				}
				delete(rebirthsFor, pb.Topic)
			}
		case <-deadline:
			t.Fatalf("no Rebirth request for %v", rebirthsFor)
		}
	}
	if v := s.metric("firehose_mqtt_sparkplug_rebirths_total"); v < 1 {
		t.Errorf("firehose_mqtt_sparkplug_rebirths_total = %v", v)
	}
}

// TestIntegrationSparkplugDeathAsWill: an edge node registers its NDEATH as
// its will, as the Sparkplug B specification has it, and its connection
// dies without a DISCONNECT. mochi publishes wills past OnPublish; the
// death certificate still lands as the node's death row, once.
func TestIntegrationSparkplugDeathAsWill(t *testing.T) {
	t.Parallel()
	dir := filepath.Join("..", "sparkplug", "testdata", "fixtures")
	birth, err := os.ReadFile(filepath.Join(dir, "death-00-NBIRTH.bin"))
	if err != nil {
		t.Fatal(err)
	}
	death, err := os.ReadFile(filepath.Join(dir, "death-03-NDEATH.bin")) // the bdSeq of that birth
	if err != nil {
		t.Fatal(err)
	}
	lim := ingest.Limits{MaxAge: 20 * 365 * 24 * time.Hour} // the fixtures are of 2023
	s := newStack(t, stackOptions{bridge: true, cfg: Config{Sparkplug: true, Limits: lim}})
	conn, err := net.Dial("tcp", s.tcpAddr())
	if err != nil {
		t.Fatal(err)
	}
	edge, _, err := connectV5Conn(t, conn, &paho.Connect{ClientID: "edge-will", CleanStart: true, KeepAlive: 30,
		WillMessage: &paho.WillMessage{Topic: "spBv1.0/willgrp/NDEATH/edge6", QoS: 1, Payload: death}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if resp, err := edge.Publish(ctx, &paho.Publish{Topic: "spBv1.0/willgrp/NBIRTH/edge6", QoS: 1, Payload: birth}); resp == nil || resp.ReasonCode != 0 {
		t.Fatalf("NBIRTH: %+v %v", resp, err)
	}
	conn.Close()                // gone without a DISCONNECT: mochi publishes the will
	s.settle(4, 15*time.Second) // the birth row, its two metrics, the death row
	if got := s.count("SELECT count(*) FROM readings WHERE device_id = 'willgrp/edge6' AND metric = 'sparkplug/NDEATH'"); got != 1 {
		t.Errorf("%d NDEATH rows of the will, want 1", got)
	}
}

// TestIntegrationSparkplugCommandsUnderAuth: under --mqtt-auth an edge node
// subscribes to its own commands (NCMD, its devices' DCMD) in its groups
// without a grant, may not command another edge node, and a host
// application with a write=FILTER grant may.
func TestIntegrationSparkplugCommandsUnderAuth(t *testing.T) {
	t.Parallel()
	creds := filepath.Join(t.TempDir(), "creds")
	writeCredentials(t, creds, map[string]string{
		"edge1": cheapHash(t, "pw-1") + " sparkplug=plant", "edge2": cheapHash(t, "pw-2") + " sparkplug=plant",
		"scada": cheapHash(t, "pw-s") + " read=spBv1.0/# write=spBv1.0/+/NCMD/#",
	})
	s := newStack(t, stackOptions{cfg: Config{Sparkplug: true, AuthFile: creds}})
	login := func(user, pw string) *v5Client {
		t.Helper()
		c, _, err := connectV5(t, s.tcpAddr(), &paho.Connect{ClientID: user, CleanStart: true, KeepAlive: 30,
			Username: user, UsernameFlag: true, Password: []byte(pw), PasswordFlag: true})
		if err != nil {
			t.Fatalf("connect %s: %v", user, err)
		}
		return c
	}
	// A will is published past the ACL check: one that commands a peer,
	// or is another edge node's death, is refused at CONNECT.
	for _, will := range []string{"spBv1.0/plant/NCMD/edge1", "spBv1.0/plant/NDEATH/edge1"} {
		_, ca, err := connectV5(t, s.tcpAddr(), &paho.Connect{ClientID: "edge2", CleanStart: true, KeepAlive: 30,
			Username: "edge2", UsernameFlag: true, Password: []byte("pw-2"), PasswordFlag: true,
			WillMessage: &paho.WillMessage{Topic: will, QoS: 1, Payload: []byte("x")}})
		if err == nil || ca == nil || ca.ReasonCode != 0x87 {
			t.Errorf("edge2 connecting with a will on %s: %+v %v, want CONNACK 0x87", will, ca, err)
		}
	}
	edge1, edge2, scada := login("edge1", "pw-1"), login("edge2", "pw-2"), login("scada", "pw-s")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, f := range []string{"spBv1.0/plant/NCMD/edge1", "spBv1.0/plant/DCMD/edge1/#"} {
		sa, err := edge1.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: f, QoS: 1}}})
		if err != nil || len(sa.Reasons) != 1 || sa.Reasons[0] >= 0x80 {
			t.Fatalf("edge1 subscribing to its own commands %s: %+v %v", f, sa, err)
		}
	}
	for _, f := range []string{"spBv1.0/+/NCMD/edge2", "spBv1.0/plant/NCMD/edge2", "spBv1.0/other/NCMD/edge1"} {
		if sa, err := edge1.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: f, QoS: 1}}}); err == nil && sa.Reasons[0] < 0x80 {
			t.Errorf("edge1 subscribed to %s, not its own commands: %+v", f, sa)
		}
	}
	if code := publishV5(t, edge2, "spBv1.0/plant/NCMD/edge1", 1, "rebirth"); code != 0x87 {
		t.Errorf("edge2 commanding edge1: reason %#x, want 0x87 not authorized", code)
	}
	if code := publishV5(t, scada, "spBv1.0/plant/NCMD/edge1", 1, "rebirth"); code >= 0x80 {
		t.Fatalf("scada commanding edge1: reason %#x", code)
	}
	if code := publishV5(t, scada, "spBv1.0/plant/DCMD/edge1/pump", 1, "x"); code != 0x87 {
		t.Errorf("scada sending a DCMD without a grant for it: reason %#x, want 0x87", code)
	}
	select {
	case pb := <-edge1.received:
		if pb.Topic != "spBv1.0/plant/NCMD/edge1" || string(pb.Payload) != "rebirth" {
			t.Errorf("edge1 received %s %q, want scada's NCMD", pb.Topic, pb.Payload)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("edge1 did not receive scada's NCMD")
	}
	select {
	case pb := <-edge1.received:
		t.Errorf("edge1 also received %s %q: a refused command was delivered", pb.Topic, pb.Payload)
	case <-time.After(300 * time.Millisecond):
	}
}
