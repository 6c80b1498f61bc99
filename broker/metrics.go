package broker

import (
	"github.com/prometheus/client_golang/prometheus"

	"firehose/ingest"
)

type metrics struct {
	publishes *prometheus.CounterVec
	byQoS     [4]prometheus.Counter // publishes by QoS 0, 1, 2 (and 2 for the invalid 3): resolved once, counted per publish
	accepted  prometheus.Counter
	refused   *prometheus.CounterVec
	ack       prometheus.Histogram

	connectsRefused *prometheus.CounterVec
	subsRefused     prometheus.Counter
	sessionsParked  *prometheus.CounterVec
	sessionsEvicted prometheus.Counter
	retainDropped   prometheus.Counter
	rebirths        prometheus.Counter
	// spbStateBytes and spbStateNodes: the Sparkplug state's account, as
	// the last sweep read it.
	spbStateBytes, spbStateNodes prometheus.Gauge
	deadLetters                  *prometheus.CounterVec // by decode path (kind)
	certRevoked                  prometheus.Counter     // connections cut by a new CRL
	handshakes                   *prometheus.CounterVec // TLS listener handshakes, by result
}

// gauges are read from the broker's state when scraped.
type gauges struct {
	clients, offlineSessions, offlineQueued, throttled, retained, retainedBytes, bcrypts func() float64
	// mochi's counts of messages it did not deliver to a session.
	dropSessionFull, dropWriteQueueFull func() float64
}

func newMetrics(reg prometheus.Registerer, g gauges) *metrics {
	m := &metrics{
		publishes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "firehose_mqtt_publishes_total",
			Help: "PUBLISH packets on the readings topic past the ACL check, by QoS (ACL refusals count in firehose_mqtt_readings_refused_total{reason=\"not_authorized\"}).",
		}, []string{"qos"}),
		accepted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "firehose_mqtt_readings_accepted_total",
			Help: "Readings stored in Redis (QoS 1/2: before their acknowledgement) or queued for it (QoS 0).",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "firehose_mqtt_readings_refused_total",
			Help: "Readings refused, by reason (invalid, not_authorized, backlog_full, redis_unavailable, overloaded, closed, shutting_down; sparkplug_quota, sparkplug_too_large: a Sparkplug B birth past --sparkplug-max-nodes or --sparkplug-max-node-bytes).",
		}, []string{"reason"}),
		ack: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "firehose_mqtt_ack_duration_seconds",
			Help:    "QoS 1/2 readings: from the PUBLISH read to Redis confirming it, after which the broker acknowledges.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
	}
	m.connectsRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "firehose_mqtt_connects_refused_total",
		Help: "CONNECTs refused under --mqtt-auth or --mqtt-tls-client-ca, by reason (bad_credentials: 0x86 / 3.1.1 code 5; throttled: too many failed logins from the address, refused before bcrypt, 0x9F / code 3; client_id: not the username or certificate's device, 0x85 / code 2; will_not_authorized: a will on another device's readings topic, 0x87 / code 5; username: not the certificate's device, 0x87 / code 5; certificate: revoked since the handshake, 0x87 / code 5; shutting_down; credentials_not_loaded: the device registry never loaded since the start, 0x88 / code 3; busy: too many connects waiting for a bcrypt check, 0x89 / code 3; client_gone: its client closed the connection while it waited for a bcrypt check, not checked).",
	}, []string{"reason"})
	m.subsRefused = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "firehose_mqtt_subscriptions_refused_total",
		Help: "SUBSCRIBE topic filters refused under --mqtt-auth because the client may not read them (0x87 not authorized; 3.1.1: 0x80 failure).",
	})
	m.sessionsParked = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "firehose_mqtt_offline_sessions_full_total",
		Help: "Disconnected sessions that stopped receiving messages until their client comes back, by reason (session_queue_full: --mqtt-max-inflight queued for it; offline_queue_full: --mqtt-max-offline-messages queued for all disconnected sessions).",
	}, []string{"reason"})
	m.sessionsEvicted = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "firehose_mqtt_sessions_evicted_total",
		Help: "Sessions of disconnected clients dropped, oldest first, because more than --mqtt-max-offline-sessions were kept.",
	})
	m.retainDropped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "firehose_mqtt_retain_dropped_total",
		Help: "Publishes and wills delivered without being retained because --mqtt-max-retained or --mqtt-max-retained-bytes was reached.",
	})
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	dropped := func(reason string, f func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "firehose_mqtt_deliveries_dropped_total",
			Help:        "QoS 1/2 messages not delivered to a subscriber's session, by reason (session_full: --mqtt-max-inflight in flight or queued for it; write_queue_full: --mqtt-max-writes-pending packets queued for its connection, QoS 0 counted too). The message itself was handled (a reading stored); that subscriber does not get it.",
			ConstLabels: prometheus.Labels{"reason": reason},
		}, f)
	}
	m.rebirths = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "firehose_mqtt_sparkplug_rebirths_total",
		Help: "Sparkplug B Rebirth requests (NCMD Node Control/Rebirth) sent to edge nodes whose DATA used an alias no birth gave, came before its birth, or skipped a seq.",
	})
	m.spbStateBytes = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "firehose_sparkplug_state_bytes",
		Help: "Size of the Sparkplug B edge node state in Redis (names, aliases, datatypes of the births; about 1x-2x Redis memory): at most --sparkplug-max-nodes x --sparkplug-max-node-bytes per credential; counts toward --high-water at 58 bytes a reading.",
	})
	m.spbStateNodes = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "firehose_sparkplug_state_nodes",
		Help: "Sparkplug B edge nodes with state in Redis, live or of an ended session not yet expired (--sparkplug-state-ttl).",
	})
	m.deadLetters = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "firehose_mqtt_dead_letters_total",
		Help: "QoS 1/2 publishes acknowledged as edge dead letters (firehose rejected list), by decode path (topic, rule, sparkplug): invalid payloads of MQTT 3.1.1 clients, Sparkplug B messages before their birth or with unknown aliases.",
	}, []string{"kind"})
	m.certRevoked = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "firehose_mqtt_certificates_revoked_disconnects_total",
		Help: "Clients disconnected because a new --mqtt-tls-crl revoked the client certificate they connected with (MQTT 5: DISCONNECT 0x87).",
	})
	m.handshakes = newHandshakeCounts()
	reg.MustRegister(m.certRevoked, m.handshakes, m.publishes, m.accepted, m.refused, m.ack, m.rebirths, m.spbStateBytes, m.spbStateNodes, m.deadLetters,
		m.connectsRefused, m.subsRefused, m.sessionsParked, m.sessionsEvicted, m.retainDropped,
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "firehose_mqtt_auth_password_checks_total",
			Help: "bcrypt comparisons run for CONNECTs under --mqtt-auth (a password that passed before is checked without one; a throttled CONNECT gets none).",
		}, g.bcrypts),
		dropped("session_full", g.dropSessionFull),
		dropped("write_queue_full", g.dropWriteQueueFull),
		gauge("firehose_mqtt_clients_connected", "MQTT clients connected now.", g.clients),
		gauge("firehose_mqtt_offline_sessions", "Sessions of disconnected clients kept now (at most --mqtt-max-offline-sessions).", g.offlineSessions),
		gauge("firehose_mqtt_offline_queued_messages", "QoS 1/2 messages queued for disconnected sessions now (at most about --mqtt-max-offline-messages).", g.offlineQueued),
		gauge("firehose_mqtt_auth_throttled_addresses", "Source addresses with recent failed logins tracked by the login throttle (at most --mqtt-auth-fail-addresses).", g.throttled),
		gauge("firehose_mqtt_retained_messages", "Retained messages kept now (at most --mqtt-max-retained).", g.retained),
		gauge("firehose_mqtt_retained_bytes", "Topic and payload bytes of the retained messages kept now (at most --mqtt-max-retained-bytes).", g.retainedBytes),
	)
	for i, q := range []string{"0", "1", "2", "2"} {
		m.byQoS[i] = m.publishes.WithLabelValues(q)
	}
	for _, r := range []string{"invalid", "not_authorized", "backlog_full", "redis_unavailable", "overloaded", "closed", "shutting_down", "sparkplug_quota", "sparkplug_too_large"} {
		m.refused.WithLabelValues(r)
	}
	for _, r := range connectRefusals {
		m.connectsRefused.WithLabelValues(r)
	}
	for _, k := range []string{ingest.KindTopic, ingest.KindRule, ingest.KindSparkplug} {
		m.deadLetters.WithLabelValues(k)
	}
	m.sessionsParked.WithLabelValues("session_queue_full")
	m.sessionsParked.WithLabelValues("offline_queue_full")
	return m
}
