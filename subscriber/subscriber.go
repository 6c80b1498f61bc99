package subscriber

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"firehose/internal/backoff"
)

// Subscriber is the subscriber role: one session with the broker at a
// time, reconnected with backoff while it runs.
type Subscriber struct {
	cfg      Config
	p        Producer
	epochs   Epochs
	dec      Decoder
	log      *slog.Logger
	m        *metrics
	storeCtx context.Context // the producer calls'; they end by the producer's own timeout

	first    *session // opened by Start, served first by Run
	version  byte     // the protocol version the broker took
	stopping atomic.Bool
	state    atomic.Pointer[State]
	reports  StateStore // nil: the state is not reported
	doubts   doubts     // QoS 1 messages stored in doubt, not yet acknowledged

	// Counts for State (the metrics have them too).
	inFlight, received, dups, recognised atomic.Int64
}

// StateStore keeps the subscribers' reported states, for firehose status
// (stream.SubscriberStates).
type StateStore interface {
	Put(ctx context.Context, clientID string, state []byte) error
}

// reportEvery is how often a running subscriber reports its state.
const reportEvery = 5 * time.Second

// ReportTo makes Run report the subscriber's state to st every few
// seconds. Call it before Run.
func (s *Subscriber) ReportTo(st StateStore) { s.reports = st }

// State is the subscription's state, as metrics and firehose status show it.
type State struct {
	Broker         string    `json:"broker"`
	ClientID       string    `json:"client_id"`
	Connected      bool      `json:"connected"`
	SessionPresent bool      `json:"session_present"`
	Protocol       string    `json:"protocol"`
	Since          time.Time `json:"since"` // of the last connection or loss of it
	LastError      string    `json:"last_error,omitempty"`
	// Counts since the process started: messages held unacknowledged now,
	// received, marked by the broker as resent (DUP), and recognised as
	// stored before (QoS 2).
	InFlight     int64     `json:"in_flight"`
	Received     int64     `json:"received"`
	Redeliveries int64     `json:"redeliveries"`
	Recognised   int64     `json:"redeliveries_recognised"`
	Reported     time.Time `json:"reported"`
}

// New builds a Subscriber; Start connects it, Run serves it.
func New(cfg Config, p Producer, epochs Epochs, dec Decoder, logger *slog.Logger, reg prometheus.Registerer) (*Subscriber, error) {
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 15 * time.Second
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Subscriber{cfg: cfg, p: p, epochs: epochs, dec: dec, log: logger.With("component", "subscriber"), storeCtx: context.Background()}
	s.m = newMetrics(reg, s)
	s.state.Store(&State{ClientID: cfg.ClientID})
	return s, nil
}

// State returns the subscription's state now.
func (s *Subscriber) State() State {
	st := *s.state.Load()
	st.InFlight, st.Received = s.inFlight.Load(), s.received.Load()
	st.Redeliveries, st.Recognised = s.dups.Load(), s.recognised.Load()
	st.Reported = time.Now().UTC()
	return st
}

// report writes the state to the state store every reportEvery until ctx
// ends; a failed write is retried at the next tick (Redis down is said by
// the producer).
func (s *Subscriber) report(ctx context.Context) {
	t := time.NewTicker(reportEvery)
	defer t.Stop()
	for {
		if b, err := json.Marshal(s.State()); err == nil {
			wctx, cancel := context.WithTimeout(ctx, reportEvery)
			_ = s.reports.Put(wctx, s.cfg.ClientID, b)
			cancel()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Start opens the first session: it returns the broker's refusal of the
// connection or of a subscription (serve stops with it). A broker that
// cannot be reached is not an error here: Run keeps trying.
func (s *Subscriber) Start(ctx context.Context) error {
	ss, err := s.open(ctx)
	var refused *refusedError
	if errors.As(err, &refused) {
		return err
	}
	if err != nil {
		s.log.Warn("mqtt broker not reachable yet: retrying", "brokers", s.cfg.Brokers, "err", err)
		return nil
	}
	s.first = ss
	return nil
}

// open connects to the first broker address that answers, in MQTT 5 or,
// when the broker refuses 5 and the protocol is auto, 3.1.1.
func (s *Subscriber) open(ctx context.Context) (*session, error) {
	var errs []error
	for _, b := range s.cfg.Brokers {
		ss, err := s.openAt(ctx, b)
		if err == nil {
			return ss, nil
		}
		var refused *refusedError
		if errors.As(err, &refused) {
			return nil, err
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

func (s *Subscriber) openAt(ctx context.Context, broker string) (*session, error) {
	versions := []byte{5}
	switch {
	case s.cfg.Protocol == Protocol311:
		versions = []byte{4}
	case s.cfg.Protocol == ProtocolAuto && s.version == 4:
		versions = []byte{4} // this broker refused 5 before
	case s.cfg.Protocol == ProtocolAuto:
		versions = []byte{5, 4}
	}
	var err error
	for i, v := range versions {
		var ss *session
		ss, err = s.connect(ctx, broker, v)
		if err == nil {
			s.version = v
			s.m.connects.WithLabelValues("ok").Inc()
			return ss, nil
		}
		var pe *protocolError
		if !errors.As(err, &pe) || i == len(versions)-1 {
			break
		}
		s.log.Info("mqtt broker refused MQTT 5: connecting with MQTT 3.1.1", "broker", broker)
	}
	s.m.connects.WithLabelValues("failed").Inc()
	return nil, err
}

// Run serves sessions until ctx ends, reconnecting with backoff after a
// session ends; it returns nil when ctx ends, or the broker's refusal of a
// later connection or subscription (the configuration no longer holds).
func (s *Subscriber) Run(ctx context.Context) error {
	if s.reports != nil {
		rctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { s.report(rctx); close(done) }()
		defer func() { stop(); <-done }()
	}
	wait := backoff.New(100*time.Millisecond, 10*time.Second)
	ss := s.first
	s.first = nil
	for {
		if ss == nil {
			var err error
			if ss, err = s.open(ctx); err != nil {
				var refused *refusedError
				if errors.As(err, &refused) {
					s.setState(false, false, err)
					return err
				}
				s.setState(false, false, err)
				s.log.Warn("mqtt broker not reachable: retrying", "brokers", s.cfg.Brokers, "err", err)
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(wait.Next()):
				}
				continue
			}
		}
		wait.Reset()
		if !ss.present {
			s.doubts.reset()
		}
		s.setState(true, ss.present, nil)
		s.log.Info("subscribed to the mqtt broker", "broker", ss.conn.RemoteAddr().String(), "client_id", s.cfg.ClientID,
			"session_present", ss.present, "protocol", protocolName(ss.v), "filters", s.cfg.filters())
		err := ss.run(ctx)
		s.setState(false, false, err)
		if ctx.Err() != nil {
			return nil
		}
		var refused *refusedError
		if errors.As(err, &refused) {
			return err // a SUBACK the read loop checked (startBeforeSuback)
		}
		s.log.Warn("mqtt session with the broker ended: reconnecting", "err", err)
		ss = nil
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait.Next()):
		}
	}
}

func (s *Subscriber) setState(connected, present bool, err error) {
	st := State{ClientID: s.cfg.ClientID, Connected: connected, SessionPresent: present, Protocol: protocolName(s.version), Since: time.Now().UTC()}
	if len(s.cfg.Brokers) > 0 {
		st.Broker = s.cfg.Brokers[0]
	}
	if err != nil {
		st.LastError = err.Error()
	}
	s.state.Store(&st)
}

func protocolName(v byte) string {
	switch v {
	case 4:
		return "3.1.1"
	case 5:
		return "5"
	}
	return ""
}

// retryWait is the backoff between attempts at storing one message.
func (s *Subscriber) retryWait() backoff.Schedule {
	return backoff.New(50*time.Millisecond, 2*time.Second)
}

// protocolError is a broker's refusal of the protocol version.
type protocolError struct{ refusedError }
