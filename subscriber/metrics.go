package subscriber

import "github.com/prometheus/client_golang/prometheus"

// metrics are the subscriber's Prometheus metrics.
type metrics struct {
	messages *prometheus.CounterVec // PUBLISHes received, by QoS
	dup      prometheus.Counter     // PUBLISHes the broker marked as sent before
	acked    *prometheus.CounterVec // acknowledgements written, by outcome
	retries  *prometheus.CounterVec // store attempts retried, by reason
	connects *prometheus.CounterVec
	// qos0Dropped: QoS 0 messages not stored (at most once), by reason.
	qos0Dropped *prometheus.CounterVec
	ack         prometheus.Histogram
	batch       prometheus.Histogram // messages per batch stored
	rebirths    prometheus.Counter   // Sparkplug B Rebirth requests published
	inDoubt     prometheus.Counter   // QoS 1 messages whose store failed in doubt

	// The counters of messages and acked by label, looked up once.
	byQoS     [4]prometheus.Counter
	byOutcome map[outcome]prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, s *Subscriber) *metrics {
	m := &metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "firehose_subscriber_messages_total",
			Help: "PUBLISH packets the subscriber received from the broker, by QoS."}, []string{"qos"}),
		dup: prometheus.NewCounter(prometheus.CounterOpts{Name: "firehose_subscriber_redeliveries_total",
			Help: "PUBLISH packets the broker marked as sent before (DUP): at QoS 1 each is stored again, at QoS 2 recognised (see firehose_producer_redeliveries_total)."}),
		acked: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "firehose_subscriber_acks_total",
			Help: "QoS 1 and 2 messages acknowledged to the broker, by outcome: stored, dead_letter, redelivered (QoS 2, already stored), retained (sent for a new subscription, not stored); not_stored counts those left unacknowledged when their session ended."}, []string{"outcome"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "firehose_subscriber_store_retries_total",
			Help: "Attempts at storing a message that failed and were retried, by reason."}, []string{"reason"}),
		connects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "firehose_subscriber_connects_total",
			Help: "Connections to the broker, by result."}, []string{"result"}),
		qos0Dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "firehose_subscriber_qos0_dropped_total",
			Help: "QoS 0 messages not stored (at most once: nobody is told), by reason."}, []string{"reason"}),
		rebirths: prometheus.NewCounter(prometheus.CounterOpts{Name: "firehose_subscriber_sparkplug_rebirths_total",
			Help: "Sparkplug B Rebirth requests (NCMD Node Control/Rebirth, QoS 0) published to the broker for edge nodes whose DATA used an alias no birth gave, came before its birth, or skipped a seq."}),
		inDoubt: prometheus.NewCounter(prometheus.CounterOpts{Name: "firehose_subscriber_stored_in_doubt_total",
			Help: "QoS 1 messages whose store failed in doubt (Redis may hold them: a timeout, WAIT short of replicas) and was made again under a doubt key: each may land twice, as a message the broker resends may."}),
		ack: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "firehose_subscriber_ack_seconds",
			Help:    "From a message's receipt to its acknowledgement to the broker.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
	}
	for q := range m.byQoS {
		m.byQoS[q] = m.messages.WithLabelValues(qosLabel[q])
	}
	m.byOutcome = map[outcome]prometheus.Counter{}
	for o, label := range outcomeLabel {
		m.byOutcome[o] = m.acked.WithLabelValues(label)
	}
	m.batch = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "firehose_subscriber_batch_messages",
		Help:    "QoS 1 and 2 messages stored together in one batch (see --subscribe-receive-maximum).",
		Buckets: prometheus.ExponentialBuckets(1, 2, 10)})
	connected := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "firehose_subscriber_connected",
		Help: "1 while the subscriber has a session with the broker."}, func() float64 {
		if s.State().Connected {
			return 1
		}
		return 0
	})
	present := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "firehose_subscriber_session_present",
		Help: "1 when the broker had the subscriber's session at the last connection (it kept what was queued)."}, func() float64 {
		if s.State().SessionPresent {
			return 1
		}
		return 0
	})
	if reg != nil {
		reg.MustRegister(m.messages, m.dup, m.acked, m.retries, m.connects, m.qos0Dropped, m.ack, m.batch, m.rebirths, m.inDoubt, connected, present)
	}
	return m
}
