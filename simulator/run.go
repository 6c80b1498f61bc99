package simulator

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	"github.com/jackc/pgx/v5/pgxpool"
)

// A run whose first rejectionsToAbort answers were all refusals for good
// (401, 403, 404, 422 ...) and which had nothing acknowledged stops: the
// fleet is misconfigured, and going on would only repeat it.
const rejectionsToAbort = 50

// lateGrace is how long after the end of an open-loop run a reading due
// before the end may still be sent; later, it counts as late (scheduled, not
// sent).
const lateGrace = time.Second

// verifyTimeout bounds the verification's queries after the landing wait.
const verifyTimeout = 2 * time.Minute

// backlogStale is how long after the last answer a scrape of the target's
// backlog may still predate the last readings' arrival in Redis.
const backlogStale = 750 * time.Millisecond

// fleet is one run: the devices, their connections and the counts.
type fleet struct {
	cfg     *Config
	log     *slog.Logger
	devices []*device
	mqtt    []*mqttDevice // by device index; nil for HTTP devices
	http    *httpTarget   // nil without HTTP devices

	httpDevices, mqttDevices int

	c     counters
	lat   *latencies
	open  bool // open loop (Rate > 0)
	sched schedule
	start time.Time

	abort     context.CancelCauseFunc // ends sending with an error
	abortOnce sync.Once
	abortErr  error // set once, then abort; read after the devices stopped

	errOnce  sync.Once
	firstErr string // the first error a device met, for the report

	landed    atomic.Int64 // rows landed so far, -1 before the landing wait
	backlog   atomic.Int64 // the target's backlog at the last scrape, -1 unknown
	backlogAt atomic.Int64 // when it was scraped, Unix nanoseconds; stored after backlog

	// names are the metrics of a data unit of the new shapes (a telemetry
	// message, a sample, a Sparkplug DATA), nodeBirthNames an NBIRTH's.
	names, nodeBirthNames []string

	scope  scope         // the run's rows in PostgreSQL
	series []Sample      // owned by the sampler until it stopped
	cpu    time.Duration // CPU this process used while sending
}

// Run drives the fleet cfg describes against the target, waits for what was
// acknowledged to land, verifies it in PostgreSQL and returns the report. An
// error means the run could not be made (bad configuration, unreachable
// target, every request refused); a run whose verification failed returns
// a report with OK false and no error. Ending ctx stops sending early; the
// landing wait and the verification still run, bounded by LandTimeout (and
// verifyTimeout for the queries after it).
func Run(ctx context.Context, cfg Config, log *slog.Logger, progress io.Writer) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "simulator")
	tlsConf, err := tlsConfig(&cfg)
	if err != nil {
		return nil, err
	}
	f := newFleet(&cfg, log)

	var db *pgxpool.Pool
	if cfg.Postgres != "" {
		if db, err = connectPostgres(ctx, cfg.Postgres); err != nil {
			return nil, err
		}
		defer db.Close()
		if f.scope, err = openScope(ctx, db, cfg.rowScope()); err != nil {
			return nil, err
		}
	}
	if f.httpDevices > 0 {
		f.http = newHTTPTarget(&cfg, tlsConf, f.httpInFlight())
		defer f.http.close()
		if err := checkHTTP(ctx, f.http, cfg.HTTP); err != nil {
			return nil, err
		}
	}
	if f.mqttDevices > 0 {
		if err := f.connectMQTT(ctx, tlsConf); err != nil {
			return nil, err
		}
		defer f.disconnectMQTT()
	}
	log.Info("fleet ready", "run", cfg.RunID, "devices", cfg.Devices, "http_devices", f.httpDevices,
		"mqtt_devices", f.mqttDevices, "rate", cfg.Rate, "duration", cfg.Duration)

	var metrics *http.Client
	if cfg.Metrics != "off" && cfg.Metrics != "" {
		metrics = &http.Client{Timeout: 800 * time.Millisecond, Transport: &http.Transport{TLSClientConfig: tlsConf, MaxIdleConnsPerHost: 1}}
		defer metrics.CloseIdleConnections()
	}

	cpu0 := processCPU()
	f.start = time.Now()
	// sendCtx ends at the end of the duration (its cause DeadlineExceeded),
	// on an interrupt (ctx's cause) or an abort (the abort's error).
	abortable, abort := context.WithCancelCause(ctx)
	defer abort(nil)
	end := f.start.Add(cfg.Duration)
	if f.open {
		// A reading due before the end is still sent a little after it
		// (its device was busy); later than that it is late.
		end = end.Add(lateGrace)
	}
	sendCtx, cancelSend := context.WithDeadline(abortable, end)
	defer cancelSend()
	f.abort = abort
	stopSampler, samplerDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(samplerDone)
		f.sample(stopSampler, metrics, progress)
	}()
	stopSampling := sync.OnceFunc(func() { close(stopSampler); <-samplerDone })
	defer stopSampling()

	var wg sync.WaitGroup
	for _, d := range f.devices {
		wg.Go(func() { f.runDevice(ctx, sendCtx, d) })
	}
	wg.Wait()
	sendEnd := time.Now()
	f.cpu = processCPU() - cpu0
	cancelSend()
	f.disconnectMQTT()
	if f.abortErr != nil {
		return nil, f.abortErr
	}
	interrupted := ctx.Err() != nil
	log.Info("fleet stopped", "sent", f.c.sent.Load(), "acked", f.c.acked.Load(), "interrupted", interrupted)

	// Landing and verification go on after an interrupt: the point of the
	// run is the report. LandTimeout bounds the wait, verifyTimeout the
	// queries after it.
	vctx, cancelVerify := context.WithTimeout(context.WithoutCancel(ctx), cfg.LandTimeout+verifyTimeout)
	defer cancelVerify()
	var land *Landing
	if db != nil {
		land, err = f.land(vctx, db, sendEnd)
		if err != nil {
			return nil, err
		}
	}
	stopSampling()
	if db != nil {
		var perSec map[int64]int64
		err := retryPG(vctx, log, "landing over time", func() (err error) {
			perSec, err = landedPerSecond(vctx, db, f.scope, f.start)
			return err
		})
		if err != nil {
			return nil, err
		}
		f.addLanded(perSec)
	}
	return f.report(sendEnd, interrupted, land), nil
}

func newFleet(cfg *Config, log *slog.Logger) *fleet {
	f := &fleet{cfg: cfg, log: log, lat: newLatencies(), open: cfg.Rate > 0,
		sched: schedule{rate: cfg.Rate, ramp: cfg.Ramp}}
	switch cfg.Shape {
	case ShapeTelemetry:
		f.names = metricNames(cfg.MetricCount)
	case ShapeTyped:
		// A message lands one row of the table: a pseudo-metric named
		// after it, so that the row verification counts by (device, ts).
		f.names = []string{TypedTable}
	case ShapeSamples:
		f.names = []string{samplesMetric}
	case ShapeSparkplug:
		f.names = metricNames(cfg.MetricCount)
		f.nodeBirthNames = nodeBirthNames(f.names)
	}
	f.devices = make([]*device, cfg.Devices)
	f.mqtt = make([]*mqttDevice, cfg.Devices)
	for i := range f.devices {
		m := cfg.deviceUsesMQTT(i)
		f.devices[i] = newDevice(cfg.RunID, i, m)
		f.devices[i].metrics = f.names
		if cfg.Shape == ShapeSparkplug {
			f.newEdgeNode(f.devices[i])
		}
		if cfg.ClockSpread > 0 && cfg.Devices > 1 {
			f.devices[i].clock = -cfg.ClockSpread + time.Duration(float64(2*cfg.ClockSpread)*float64(i)/float64(cfg.Devices-1))
		}
		if m {
			f.mqttDevices++
		} else {
			f.httpDevices++
		}
	}
	f.landed.Store(-1)
	f.backlog.Store(-1)
	return f
}

// httpInFlight is the cap on HTTP requests in flight: Concurrency, else one
// per HTTP device up to maxAutoHTTPInF; never more than the HTTP devices
// (each sends one request at a time).
func (f *fleet) httpInFlight() int {
	n := f.cfg.Concurrency
	if n == 0 {
		n = maxAutoHTTPInF
	}
	return max(1, min(n, f.httpDevices))
}

func tlsConfig(cfg *Config) (*tls.Config, error) {
	if cfg.CAFile == "" && !cfg.InsecureSkipVerify && cfg.KeyExchange != KeyExchangeClassic {
		return nil, nil
	}
	tc := &tls.Config{InsecureSkipVerify: cfg.InsecureSkipVerify} //nolint:gosec // asked for, for self-signed test deployments
	if cfg.KeyExchange == KeyExchangeClassic {
		tc.CurvePreferences = []tls.CurveID{tls.X25519, tls.CurveP256}
	}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-file %s: no PEM certificate in it", cfg.CAFile)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

// runDevice is one device's life: measure on schedule (open loop) or as soon
// as the last reading was answered (closed loop), send, and stop when
// sendCtx ends. ctx is the run's: when it ends (Ctrl-C) the device also stops
// resending.
func (f *fleet) runDevice(ctx, sendCtx context.Context, d *device) {
	switch f.cfg.Shape {
	case ShapeTelemetry, ShapeTyped:
		f.runTelemetry(ctx, sendCtx, d)
		return
	case ShapeSamples:
		f.runSamples(ctx, sendCtx, d)
		return
	case ShapeSparkplug:
		f.runEdgeNode(ctx, sendCtx, d)
		return
	}
	md := f.mqtt[d.idx]
	d.reqCtx = context.WithoutCancel(ctx)
	batch := 1
	var h http.Header
	if !d.mqtt {
		h = f.http.headers(d, f.cfg.APIKey)
		if !f.http.fast {
			batch = f.cfg.Batch
		}
	}
	timer := stoppedTimer()
	defer timer.Stop()
	var (
		inBatch int
		first   uint64
		due     time.Time
	)
	for j := int64(0); ; j++ {
		// A reading still waiting for its turn when the time is up (past
		// lateGrace, in open loop) is not sent: the report counts it as
		// scheduled and late.
		next, ok := f.nextDue(sendCtx, d, j, timer)
		if !next.IsZero() {
			due = next
		}
		if !ok {
			break
		}
		r := d.next(due.Add(d.clock))
		switch {
		case d.mqtt:
			if acked, payload := f.publish(ctx, d, md, r, due); acked && f.resendNow(d) {
				f.resendMQTT(ctx, md, &d.ledger, md.topic, r.seq, 1, payload)
			}
		case f.http.fast:
			d.buf = appendFast(d.buf[:0], r)
			f.sendReadings(ctx, d, h, r.seq, 1, due)
		default:
			if inBatch == 0 {
				d.buf, first = append(d.buf[:0], '['), r.seq
			} else {
				d.buf = append(d.buf, ',')
			}
			d.buf = appendV1(d.buf, d.id, r, f.cfg.ExtraFields)
			// A device's first request is shorter (1 to batch readings, by its
			// index), so the fleet's uploads spread evenly over time instead
			// of all devices filling their batches at the same moment.
			if inBatch++; inBatch == batch || (j < int64(batch) && j == int64(d.idx%batch)) {
				d.buf = append(d.buf, ']')
				f.sendReadings(ctx, d, h, first, inBatch, due)
				inBatch = 0
			}
		}
	}
	if inBatch > 0 {
		if sendCtx.Err() != nil && !errors.Is(context.Cause(sendCtx), context.DeadlineExceeded) {
			// Interrupted or aborted before the batch was full.
			d.flags = d.flags[:first-1] // never sent: out of the ledger
		} else {
			d.buf = append(d.buf, ']')
			f.sendReadings(ctx, d, h, first, inBatch, due)
		}
	}
}

// sendReadings posts d.buf, the readings first..first+n-1 of the shape
// reading, and with Config.Resend maybe once more after its
// acknowledgement; only then does the request carry an Idempotency-Key.
func (f *fleet) sendReadings(ctx context.Context, d *device, h http.Header, first uint64, n int, due time.Time) {
	if f.cfg.Resend == 0 {
		f.sendHTTP(ctx, d, h, d.buf, first, n, due)
		return
	}
	setMessageID(h, d.id, first)
	f.sendHTTP(ctx, d, h, d.buf, first, n, due)
	if d.flags[first-1]&flagAcked != 0 && f.resendNow(d) {
		f.resendHTTP(ctx, d, h, d.buf, first, n)
	}
}

// nextDue waits for the turn of device d's unit j (open loop: its time in
// the schedule; closed loop: now) and returns its intended send time; false
// when the run is over for d (with the zero time when the schedule has no
// unit j within the run).
func (f *fleet) nextDue(sendCtx context.Context, d *device, j int64, timer *time.Timer) (time.Time, bool) {
	due := time.Now()
	if f.open {
		at := f.sched.At(j*int64(len(f.devices)) + int64(d.idx))
		if at >= f.cfg.Duration {
			return time.Time{}, false
		}
		due = f.start.Add(at)
		if wait := time.Until(due); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-sendCtx.Done():
			}
		}
	}
	return due, sendCtx.Err() == nil
}

// resendNow draws whether an acknowledged message is sent again
// (Config.Resend).
func (f *fleet) resendNow(d *device) bool {
	return f.cfg.Resend > 0 && d.rng.Float64() < f.cfg.Resend
}

// noteError keeps the first error a device met, for the report.
func (f *fleet) noteError(err error) {
	f.errOnce.Do(func() { f.firstErr = err.Error() })
	f.log.Debug("send failed", "err", err)
}

// noteRejection stops the run when nothing was ever acknowledged and
// rejections pile up.
func (f *fleet) noteRejection(err error) {
	f.noteError(err)
	if f.c.acked.Load() == 0 && f.c.rejected.Load() >= rejectionsToAbort {
		f.abortOnce.Do(func() {
			f.abortErr = fmt.Errorf("stopped: the first %d readings were all refused and none acknowledged; the first refusal: %w", f.c.rejected.Load(), err)
			f.abort(f.abortErr)
		})
	}
}

// abortNow stops the run with err at once: going on would only repeat it.
func (f *fleet) abortNow(err error) {
	f.noteError(err)
	f.abortOnce.Do(func() {
		f.abortErr = err
		f.abort(err)
	})
}

// sample runs each second until stop: it takes the second's counts and
// latencies, reads the target's metrics, appends a Sample and, if progress
// is set, prints a line.
func (f *fleet) sample(stop <-chan struct{}, metrics *http.Client, progress io.Writer) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	interval := newHist()
	var prevSent, prevAcked, prevRefused, prevErrors, prevQoS0 int64
	prevCommitted := -1.0
	take := func(now time.Time, final bool) {
		f.lat.drain(interval)
		s := Sample{T: round3(now.Sub(f.start).Seconds()), Backlog: -1, Committed: -1}
		sent, acked, refused, errs, q0 := f.c.sent.Load(), f.c.acked.Load(), f.c.refused.Load(), f.c.errors.Load(), f.c.qos0.Load()
		s.Sent, s.Acked, s.Refused, s.Errors = sent-prevSent, acked-prevAcked, refused-prevRefused, errs-prevErrors
		done := (acked - prevAcked) + (q0 - prevQoS0)
		prevSent, prevAcked, prevRefused, prevErrors, prevQoS0 = sent, acked, refused, errs, q0
		l := summarize(interval)
		s.AckP50Ms, s.AckP90Ms, s.AckP99Ms, s.AckMaxMs = l.P50Ms, l.P90Ms, l.P99Ms, l.MaxMs
		if metrics != nil && !final {
			ctx, cancel := context.WithTimeout(context.Background(), 800*time.Millisecond)
			m, err := readMetrics(ctx, metrics, f.cfg.Metrics)
			cancel()
			if err != nil {
				f.log.Debug("scrape failed", "url", f.cfg.Metrics, "err", err)
			}
			if m.backlog >= 0 {
				s.Backlog = int64(m.backlog)
			}
			if m.committed >= 0 && prevCommitted >= 0 {
				s.Committed = int64(m.committed - prevCommitted)
			}
			prevCommitted = m.committed
		}
		f.backlog.Store(s.Backlog)
		f.backlogAt.Store(now.UnixNano())
		if !final || s.Sent+s.Acked > 0 {
			f.series = append(f.series, s)
		}
		if progress != nil && !final {
			line := fmt.Sprintf("%5.0fs  sent %d  acked %d  refused %d  errors %d  %d/s  ack p50 %s p99 %s",
				s.T, sent, acked, refused, errs, done, formatMs(s.AckP50Ms), formatMs(s.AckP99Ms))
			if s.Backlog >= 0 {
				line += fmt.Sprintf("  backlog %d", s.Backlog)
			}
			if n := f.landed.Load(); n >= 0 {
				line += fmt.Sprintf("  landed %d", n)
			}
			fmt.Fprintln(progress, line)
		}
	}
	for {
		select {
		case now := <-tick.C:
			take(now, false)
		case <-stop:
			take(time.Now(), true)
			return
		}
	}
}

// land waits for the acknowledged readings to land, then verifies them (in
// the shape typed, the rows of the typed table, column by column too).
func (f *fleet) land(ctx context.Context, db *pgxpool.Pool, sendEnd time.Time) (*Landing, error) {
	deadline := time.Now().Add(f.cfg.LandTimeout)
	want, qos0 := f.c.acked.Load(), f.c.qos0.Load()
	if f.cfg.Shape != ShapeReading {
		var births int64
		want, qos0, births = rowsAcked(f.ledgers())
		want += births + f.c.deathsAcked.Load() // a row each
	}
	// The target measures its backlog every so often (firehose: 250 ms), so
	// only a scrape well after the last answer tells whether the last
	// readings are still in Redis.
	fresh := sendEnd.Add(backlogStale).UnixNano()
	backlog := func() int64 {
		if f.backlogAt.Load() < fresh {
			return -1
		}
		return f.backlog.Load()
	}
	rows, timedOut, err := waitLanding(ctx, db, f.scope, want, want+qos0, f.cfg.LandTimeout,
		backlog, func(n int64) { f.landed.Store(n) }, f.log)
	if err != nil {
		return nil, err
	}
	land := &Landing{WaitedS: round3(time.Since(sendEnd).Seconds()), TimedOut: timedOut}
	f.log.Info("landing wait over", "rows", rows, "acked", want, "timed_out", timedOut)
	if f.cfg.BeforeVerify != nil {
		if err := f.cfg.BeforeVerify(); err != nil {
			return nil, fmt.Errorf("before verify: %w", err)
		}
	}
	if f.cfg.Shape == ShapeReading {
		var t *tally
		err := retryPG(ctx, f.log, "verify", func() (err error) {
			t, err = verify(ctx, db, f.scope, f.devices)
			return err
		})
		if err != nil {
			return nil, err
		}
		land.fromTally(t)
	} else {
		var t *rowTally
		err := retryPG(ctx, f.log, "verify rows", func() (err error) {
			t, err = verifyRows(ctx, db, f.scope, f.ledgers(), f.c.deathsAcked.Load(), f.c.deathsUnacked.Load())
			return err
		})
		if err != nil {
			return nil, err
		}
		land.fromRowTally(t)
		if f.cfg.Shape == ShapeTyped {
			err := retryPG(ctx, f.log, "verify columns", func() (err error) {
				land.Columns, err = verifyColumns(ctx, db, f.scope, f.devices, f.cfg.MetricCount)
				return err
			})
			if err != nil {
				return nil, err
			}
		}
		if f.cfg.Shape == ShapeSparkplug && f.cfg.QoS > 0 && f.c.rebirthsForced.Load() > 0 {
			if land.DeadLetters, err = f.deadLetters(ctx, db, deadline); err != nil {
				return nil, err
			}
		}
	}
	if f.scope.typed != "" {
		return land, nil // a typed table has no committed_at: no end-to-end latency
	}
	err = retryPG(ctx, f.log, "end-to-end latency", func() (err error) {
		land.ReceiptToCommit, land.MeasuredToCommit, land.HasCommitTimes, err = endToEnd(ctx, db, f.scope)
		return err
	})
	if err != nil {
		return nil, err
	}
	return land, nil
}

// deadLetters checks the run's edge dead letters against the Sparkplug
// DATA messages sent with an unknown alias at QoS 1/2. A dead letter lands
// in the transaction of its batch, as rows do, so after the landing wait
// they are there; while some are missing it polls until deadline (the
// landing wait's --land-timeout).
func (f *fleet) deadLetters(ctx context.Context, db *pgxpool.Pool, deadline time.Time) (*DeadLetterCheck, error) {
	for {
		var letters []edgeLetter
		err := retryPG(ctx, f.log, "read edge dead letters", func() (err error) {
			letters, err = readDeadLetters(ctx, db, f.scope)
			return err
		})
		if err != nil {
			return nil, err
		}
		d := countDeadLetters(f.ledgers(), letters)
		if d.Missing == 0 || !time.Now().Before(deadline) {
			return d, nil
		}
		if !sleep(ctx, min(landPoll, time.Until(deadline)+time.Millisecond)) {
			return d, nil
		}
	}
}

// addLanded puts the rows committed each second into the series, adding
// seconds past its end when landing went on longer than sampling.
func (f *fleet) addLanded(perSec map[int64]int64) {
	for s, n := range perSec {
		if s < 0 {
			s = 0 // committed_at is the transaction's start: a hair before a reading's receipt can round below 0
		}
		for int64(len(f.series)) <= s {
			f.series = append(f.series, Sample{T: float64(len(f.series) + 1), Backlog: -1, Committed: -1})
		}
		f.series[s].Landed += n
	}
}

// totalLatency is the whole run's acknowledgement latency; valid after the
// sampler stopped.
func (f *fleet) totalLatency() *hdrhistogram.Histogram { return f.lat.total }
