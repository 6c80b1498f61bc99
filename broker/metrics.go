package broker

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	publishes *prometheus.CounterVec
	accepted  prometheus.Counter
	refused   *prometheus.CounterVec
	ack       prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, clients func() float64) *metrics {
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
			Help: "Readings refused, by reason (invalid, not_authorized, backlog_full, redis_unavailable, overloaded, closed, shutting_down).",
		}, []string{"reason"}),
		ack: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "firehose_mqtt_ack_duration_seconds",
			Help:    "QoS 1/2 readings: from the PUBLISH read to Redis confirming it, after which the broker acknowledges.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
	}
	connected := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "firehose_mqtt_clients_connected",
		Help: "MQTT clients connected now.",
	}, clients)
	reg.MustRegister(m.publishes, m.accepted, m.refused, m.ack, connected)
	for _, q := range []string{"0", "1", "2"} {
		m.publishes.WithLabelValues(q)
	}
	for _, r := range []string{"invalid", "not_authorized", "backlog_full", "redis_unavailable", "overloaded", "closed", "shutting_down"} {
		m.refused.WithLabelValues(r)
	}
	return m
}
