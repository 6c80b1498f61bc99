package faults

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt3 "github.com/eclipse/paho.mqtt.golang"

	"firehose/internal/mqtttest"
	"firehose/internal/testenv"
)

// mbSampler samples a process's RSS every interval until Stop.
type mbSampler struct {
	peak    atomic.Int64
	samples atomic.Int64
	stop    chan struct{}
	done    sync.WaitGroup
}

func mbSample(pid int, interval time.Duration) *mbSampler {
	m := &mbSampler{stop: make(chan struct{})}
	m.done.Go(func() {
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			if rss := RSS(pid); rss > m.peak.Load() {
				m.peak.Store(rss)
			}
			m.samples.Add(1)
			select {
			case <-m.stop:
				return
			case <-tick.C:
			}
		}
	})
	return m
}

// Stop ends the sampling and returns the peak RSS.
func (m *mbSampler) Stop() int64 {
	select {
	case <-m.stop:
	default:
		close(m.stop)
	}
	m.done.Wait()
	return m.peak.Load()
}

// TestBrokerMemoryBounded is issue 8's hole 4: subscribers to devices/# at
// QoS 1 with persistent sessions go away, then a fleet publishes readings of
// ~230 bytes over MQTT. With mochi's defaults every session kept up to 8,192
// of them (the 200 sessions x 80,000 readings took firehose from 28
// MiB to 5.9 GiB and publishing down to ~600/s); with the broker's bounds
// (defaults: --mqtt-max-inflight 256 per session, --mqtt-max-offline-messages
// 100,000 in all; a full session leaves the topic index) the process's RSS
// stays within idle + 96 MiB + sessions x 256 x 4 KiB (a queued message
// holds ~1.2 KiB live; Go's GC and mochi's per-second scans of every queue
// make its RSS cost about 4 KiB), the fleet's send rate holds, and every
// acknowledged reading lands exactly once.
func TestBrokerMemoryBounded(t *testing.T) {
	skipShort(t)
	t.Parallel()
	subscribers := scale(50, 200)
	devices := scale(50, 200)
	rate := scale(1000.0, 2000.0)
	duration := scale(15*time.Second, 40*time.Second) // 15,000 / 80,000 readings
	const perSession = 256                            // --mqtt-max-inflight's default

	svc := SharedServices(t)
	s := StartStack(t, svc)
	idle := mbSample(s.Proc.Pid(), 200*time.Millisecond)
	time.Sleep(time.Second) // pacing: a few samples of the idle process
	rssIdle := idle.Stop()

	run := "mem" + testenv.ID()
	for i := range subscribers {
		id := fmt.Sprintf("mem-sub-%s-%d", run, i)
		c, err := mqtttest.ConnectV3(t, s.MQTT(), id, func(o *mqtt3.ClientOptions) { o.SetCleanSession(false) })
		if err != nil {
			t.Fatalf("subscriber %s: %v", id, err)
		}
		if tok := c.Subscribe("devices/#", 1, nil); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
			t.Fatalf("subscriber %s subscribes: %v", id, tok.Error())
		}
		c.Disconnect(50)
	}
	outWaitFor(t, 30*time.Second, "the subscribers' sessions were not all kept", func() (bool, string) {
		// (A firehose without the gauge keeps every session anyway.)
		n, ok := s.Metric("firehose_mqtt_offline_sessions")
		return !ok || int(n) == subscribers, fmt.Sprintf("%v offline sessions", n)
	})

	peak := mbSample(s.Proc.Pid(), 200*time.Millisecond)
	defer peak.Stop()
	l := StartLoad(t, s, LoadOpts{Devices: devices, Protocol: "mqtt", Rate: rate, Duration: duration,
		Extra: []string{"--run-id", run, "--extra-fields", "8"}})
	rep := l.Wait(10 * time.Minute)
	AssertExactlyOnce(t, rep, l)
	queued, _ := s.Metric("firehose_mqtt_offline_queued_messages")
	full, _ := s.Metric(`firehose_mqtt_offline_sessions_full_total{reason="session_queue_full"}`)
	rssPeak := peak.Stop()

	bound := rssIdle + 96<<20 + int64(subscribers)*perSession*4<<10
	if rssPeak > bound {
		t.Errorf("firehose peak RSS %s, want at most %s (idle %s + 96 MiB + %d sessions x %d x 4 KiB)",
			outMiB(rssPeak), outMiB(bound), outMiB(rssIdle), subscribers, perSession)
	}
	// The per-session check races with concurrent publishers: a session may
	// pass its bound by the few publishes checked at the same instant.
	if queued > float64(subscribers*perSession)*1.05 {
		t.Errorf("%v messages queued for %d disconnected sessions, want at most %d x %d (+5%%)", queued, subscribers, subscribers, perSession)
	}
	// Publishing must not slow to a crawl: the open loop sends on schedule.
	achieved := float64(rep.Send.Sent) / duration.Seconds()
	if achieved < rate*0.8 {
		t.Errorf("the fleet sent %.0f readings/s of the %.0f/s it aimed at", achieved, rate)
	}
	notes := fmt.Sprintf("%d persistent subscribers to devices/# (QoS 1) gone before the load; %d messages queued for them at the end (bound %d x %d), %.0f sessions full (then out of the topic index); firehose RSS idle %s, peak %s (bound %s); sent %.0f/s of %.0f/s",
		subscribers, int64(queued), subscribers, perSession, full, outMiB(rssIdle), outMiB(rssPeak), outMiB(bound), achieved, rate)
	t.Log(notes)

	r := ResultOf(rep)
	r.Scenario = "14. broker memory bounded"
	r.Load = LoadDesc(rep) + ", readings of ~230 bytes (--extra-fields 8)"
	r.Faults = fmt.Sprintf("%d subscribers to devices/# at QoS 1 with persistent sessions went away before the load", subscribers)
	r.Notes = notes
	Record(t, r)
}
