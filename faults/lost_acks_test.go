package faults

// Scenario 20: acknowledgements lost after the XADD, and devices that resend.
// A TCP proxy between firehose and its Redis lets every command through and
// drops the reply with the connection (the script ran, its answer is lost),
// several times under a mixed HTTP and MQTT QoS 1 load; then Redis itself is
// killed with SIGKILL and restarted from its AOF. The devices resend what got
// no acknowledgement. With --dedup on, every resend is answered success and
// nothing lands twice; with it off (long form, the same faults) the resends
// land twice, which is what docs/guarantees.md promised before --dedup.

import (
	"fmt"
	"testing"
	"time"
)

func TestLostAcksDeduplicated(t *testing.T) {
	skipShort(t)
	t.Parallel()
	for _, mode := range scale([]string{"natural", "id"}, []string{"off", "natural", "id"}) {
		t.Run("dedup-"+mode, func(t *testing.T) { lostAcks(t, mode) })
	}
}

// lostAcks runs the scenario with --dedup mode. The fleet sends single
// readings with their device time (natural, off), or with id the telemetry
// shape of three metrics a message under the mapping rules of
// deploy/simulate-rules.yaml, each message with its msg_id (MQTT: in the
// payload, named by the rule's id; HTTP: also as Idempotency-Key).
func lostAcks(t *testing.T, mode string) {
	cuts := scale(6, 20)
	duration := scale(14*time.Second, 40*time.Second)

	rs := StartRedis(t, true)
	px := startTCPProxy(t, fmt.Sprintf("127.0.0.1:%d", rs.Port))
	svc := OwnServices(t, fmt.Sprintf("redis://127.0.0.1:%d/0", px.Port()))
	flags, load := []string{"--dedup", mode}, LoadOpts{Duration: duration}
	if mode == "id" {
		flags = append(flags, "--config", "../deploy/simulate-rules.yaml")
		load.Extra = []string{"--shape", "telemetry", "--rate", "700"} // messages/s: 2,100 rows/s
	}
	s := StartStack(t, svc, flags...)
	l := StartLoad(t, s, load)
	underLoad := func(what string) { t.Helper(); outUnderLoad(t, l, what) }
	outWaitFlowing(t, s, l, "the first cut")

	// Replies dropped for 30 ms at a time: the round trips in flight then,
	// and the backlog measurement's, ran in Redis and were never answered.
	for i := range cuts {
		underLoad(fmt.Sprintf("cut %d", i+1))
		px.DropReplies(true)
		time.Sleep(30 * time.Millisecond) // the fault: replies dropped this long
		px.DropReplies(false)
		time.Sleep(600 * time.Millisecond) // pacing: load between cuts
	}
	dropped := px.Dropped()

	// Redis killed: what it had confirmed is in its AOF (appendfsync
	// always), and so is every key the dedup script remembered with it.
	underLoad("the kill")
	rs.Kill()
	time.Sleep(time.Second) // the fault: Redis down this long
	rs.Start()
	outWaitFor(t, 60*time.Second, "/readyz did not answer 200 after Redis came back", func() (bool, string) {
		code, body := outReadyz(s)
		return code == 200, fmt.Sprintf("/readyz %d %s", code, body)
	})
	underLoad("the recovery")

	rep := l.Wait(5 * time.Minute)
	AssertExactlyOnce(t, rep, l)
	deduped := outMetric(t, s, "firehose_producer_duplicates_total")
	if dropped == 0 {
		t.Fatal("no reply was dropped: the proxy saw no traffic while cutting")
	}
	if rep.Landing.Unexpected != 0 {
		t.Errorf("%d rows of readings the fleet never sent", rep.Landing.Unexpected)
	}
	if mode != "off" {
		if rep.Landing.DupAfterResend != 0 {
			t.Errorf("--dedup %s: %d resent readings landed twice", mode, rep.Landing.DupAfterResend)
		}
		if deduped == 0 {
			t.Errorf("--dedup %s: no resend was taken for a duplicate (firehose_producer_duplicates_total 0) after %d dropped replies and a Redis kill: the faults lost no acknowledgement", mode, dropped)
		}
	}
	outWaitFor(t, 2*time.Minute, "the backlog did not drain", func() (bool, string) {
		b, ok := outMetricSum(s, "firehose_stream_backlog_entries")
		return ok && b == 0, fmt.Sprintf("backlog %.0f (read: %v)", b, ok)
	})
	var dupMQTT, dupHTTP int64
	if mode != "id" { // by (device, seq): the telemetry shape's rows of a message share its seq
		dupMQTT, dupHTTP = outDupsByProtocol(t, svc.Postgres, rep.DevicePrefix)
	}
	t.Logf("--dedup %s: %d replies dropped; simulator: acked %d (%d after a resend), refused %d, errors %d, reconnects %d; landed %d, dup_after_resend %d (MQTT %d, HTTP %d); resends not stored again: %.0f",
		mode, dropped, rep.Send.Acked, rep.Send.AckedAfterResend, rep.Send.Refused, rep.Send.Errors, rep.Send.Reconnects,
		rep.Landing.Readings, rep.Landing.DupAfterResend, dupMQTT, dupHTTP, deduped)

	r := ResultOf(rep)
	r.Scenario = "20. acknowledgements lost, devices resend: --dedup " + mode
	r.Load = LoadDesc(rep)
	r.Faults = fmt.Sprintf("a proxy between firehose and Redis dropped every reply (and its connection) for 30 ms, %d times (%d replies lost after the commands ran); then Redis (appendfsync always) SIGKILLed and restarted",
		cuts, dropped)
	r.Refused = rep.Send.Refused + rep.Send.Errors
	r.Notes = fmt.Sprintf("%d acked after a resend; resends answered success and not stored again: %.0f; duplicates after resend: %d MQTT, %d HTTP",
		rep.Send.AckedAfterResend, deduped, dupMQTT, dupHTTP)
	if mode == "id" {
		r.Notes = fmt.Sprintf("telemetry shape, 3 metrics a message, counted in messages; rows acked %d, landed %d; %d acked after a resend; resends answered success and not stored again: %.0f rows",
			rep.Landing.RowsAcked, rep.Landing.RowsLanded, rep.Send.AckedAfterResend, deduped)
	}
	if mode == "off" {
		r.Notes += " (dedup off: the resends land twice)"
	}
	Record(t, r)
	s.Stop(30 * time.Second)
}
