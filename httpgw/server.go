package httpgw

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"firehose/ingest"
	"firehose/internal/clientcert"
	"firehose/internal/ticketkeys"
)

// Producer is what the gateway needs of stream.Producer.
//
// Add blocks until every reading of rs is durable and returns nil, or returns
// why not, within its own bound (stream.Producer: one round-trip timeout); the
// gateway acknowledges a request only after Add returned nil, and never
// retries (the client did not get an acknowledgement and may resend). Errors
// the client should retry are ingest.ErrBacklogFull, ErrUnavailable,
// ErrOverloaded and ErrClosed. The gateway calls Add with a context that is
// never cancelled (addContext), so Add answers only once it knows; after it
// returned it no longer uses rs, so the gateway may reuse its memory.
//
// Ready reports whether Add would currently accept readings, and if not why.
type Producer interface {
	Add(ctx context.Context, rs []ingest.Reading) error
	Ready() error
}

// shardedProducer is a Producer that can say which shards it refuses while
// it is ready for the others (stream.Producer is one).
type shardedProducer interface {
	UnavailableShards() []int
}

// addContext is the context of every Add: not the request's. net/http
// cancels a request's context when the client half-closes its socket after
// the body (shutdown(SHUT_WR), as some embedded HTTP stacks do), though the
// client still waits for the answer; a cancelled Add could not say whether
// the readings were stored, and the request would end without an answer,
// which net/http sends as an empty 200. The producer bounds every Add by its
// round-trip timeout, so waiting for its answer is bounded too.
var addContext = context.Background()

// Limits of the HTTP server, against slow clients (slowloris) holding
// connections open.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 120 * time.Second
	maxHeaderBytes    = 64 << 10
)

const (
	dbCheckTimeout   = 2 * time.Second // bounds GET /health/db
	keyCheckInterval = 2 * time.Second // how often Run looks for a changed key file
)

// Server is the HTTP gateway: it decodes and validates readings, hands them to
// the Producer and acknowledges them once they are durable. See the package
// comment for its endpoints.
type Server struct {
	cfg     Config
	p       Producer
	dbCheck func(context.Context) error
	log     *slog.Logger
	keys    *keyStore            // nil: no authentication
	certs   *clientcert.Verifier // nil: no client certificates
	tickets *ticketkeys.Keys     // nil: per-process session ticket keys
	devices Devices              // nil: no device authentication (--http-device-auth)
	m       *metrics
	handler http.Handler
	srv     *http.Server

	// keyCheckEvery is how often Run looks for a changed key file; tests
	// shorten it.
	keyCheckEvery time.Duration

	draining atomic.Bool // Run's context ended: readiness answers 503
	running  atomic.Bool

	mu sync.Mutex // guards ln
	ln net.Listener
}

// New builds the gateway from cfg (zero fields take their defaults); it does
// not listen yet. p receives the readings. dbCheck answers GET /health/db (nil:
// 503 "not configured"). reg serves GET /metrics and receives the gateway's
// own metrics. An invalid config or API key file is an error.
func New(cfg Config, p Producer, dbCheck func(context.Context) error, logger *slog.Logger, reg *prometheus.Registry) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:           cfg,
		p:             p,
		dbCheck:       dbCheck,
		log:           logger.With("component", "httpgw"),
		m:             newMetrics(reg),
		keyCheckEvery: keyCheckInterval,
	}
	if cfg.APIKeysFile != "" {
		ks, err := newKeyStore(cfg.APIKeysFile, cfg.Limits.MaxDeviceID, s.log)
		if err != nil {
			return nil, fmt.Errorf("load --http-api-keys: %w", err)
		}
		s.keys = ks
	}
	if cfg.DeviceAuth != "" {
		if cfg.Devices == nil {
			return nil, errors.New("--http-device-auth: the device credentials were not set up (Config.Devices)")
		}
		s.devices = cfg.Devices
		s.log.Info("device authentication on: each request names its device and secret (HTTP Basic auth)")
	}
	if cfg.TLSClientCA != "" {
		v, err := clientcert.New(clientcert.Config{
			CAFile:   cfg.TLSClientCA,
			CRLFile:  cfg.TLSCRL,
			Identity: clientcert.Identity(cfg.TLSIdentity),
			CheckID:  func(id string) error { return ingest.ValidateDeviceID(id, cfg.Limits.MaxDeviceID) },
			Flag:     "--http-tls",
		}, s.log)
		if err != nil {
			return nil, err
		}
		s.certs = v
	}
	if cfg.TLSTicketKeys != "" {
		k, err := ticketkeys.Load(cfg.TLSTicketKeys, "--http-tls-ticket-keys", s.log)
		if err != nil {
			return nil, err
		}
		s.tickets = k
	}
	s.handler = s.routes(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	s.srv = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		// Per-connection failures (TLS handshakes of scanners, ...) are not
		// worth more than Debug.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	return s, nil
}

// routes builds the mux. Every known path also gets a method-agnostic
// pattern answering 405 with Allow, and "/" answers 404, so that every answer
// is JSON and counted.
func (s *Server) routes(metricsHandler http.Handler) http.Handler {
	mux := http.NewServeMux()
	type route struct {
		method, path string
		h            func(http.ResponseWriter, *http.Request) int
	}
	for _, rt := range []route{
		{http.MethodPost, epFast, s.handleFast},
		{http.MethodPost, epV1, s.handleV1},
		{http.MethodGet, epHealth, s.handleHealth},
		{http.MethodGet, epHealthDB, s.handleHealthDB},
		{http.MethodGet, epLivez, s.handleHealth},
		{http.MethodGet, epReadyz, s.handleReadyz},
		{http.MethodGet, epMetrics, serveMetrics(metricsHandler)},
	} {
		em := s.m.endpoint(rt.path)
		mux.Handle(rt.method+" "+rt.path, instrument(em, rt.h))
		allow := rt.method
		if rt.method == http.MethodGet {
			allow = "GET, HEAD"
		}
		mux.Handle(rt.path, instrument(em, methodNotAllowed(allow)))
	}
	mux.Handle("/", instrument(s.m.endpoint(epOther), notFound))
	return mux
}

// instrument counts and times the requests of one endpoint; h returns the
// status code it answered.
func instrument(em *endpointMetrics, h func(http.ResponseWriter, *http.Request) int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		em.done(h(w, r), start)
	})
}

func methodNotAllowed(allow string) func(http.ResponseWriter, *http.Request) int {
	body := refusal(0, "", "method not allowed: use "+allow).body
	return func(w http.ResponseWriter, r *http.Request) int {
		w.Header().Set("Allow", allow)
		return writeJSON(w, http.StatusMethodNotAllowed, body)
	}
}

func notFound(w http.ResponseWriter, r *http.Request) int {
	return writeJSON(w, http.StatusNotFound, []byte(`{"error":"not found"}`))
}

// Handler returns the gateway's routes, for tests (httptest) and embedding.
func (s *Server) Handler() http.Handler { return s.handler }

// Listen binds cfg.Addr (and loads the TLS certificate when configured). Run
// calls it if it has not been called.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return fmt.Errorf("listen on %s: already listening on %s", s.cfg.Addr, s.ln.Addr())
	}
	if s.cfg.TLSCert != "" {
		cert, err := loadCertificate(s.cfg.TLSCert, s.cfg.TLSKey)
		if err != nil {
			return err
		}
		s.srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
		if s.certs != nil {
			s.certs.ApplyOptional(s.srv.TLSConfig)
		}
		if s.tickets != nil {
			// Survives ServeTLS's clone of the config: the keys in use are
			// looked up at each handshake.
			s.tickets.Apply(s.srv.TLSConfig)
		}
	}
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("listen on %s: %w: choose another with --http-addr", s.cfg.Addr, syscall.EADDRINUSE)
		}
		return fmt.Errorf("listen on %s: %w", s.cfg.Addr, err)
	}
	s.ln = ln
	return nil
}

// loadCertificate reads a PEM certificate and key; errors name the file.
func loadCertificate(certFile, keyFile string) (tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("read --http-tls-cert: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("read --http-tls-key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load TLS certificate %s with key %s: %w", certFile, keyFile, err)
	}
	return cert, nil
}

// Addr is the bound address once Listen succeeded (so ":0" can be used), or
// nil.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Run serves until ctx ends (calling Listen first if needed); it also
// re-reads a changed API key file. When ctx ends, readiness answers 503 and
// the server stops accepting connections and waits, at most
// cfg.ShutdownTimeout, for in-flight requests to get their answers: each
// request was acknowledged only if its readings were stored. Run returns nil
// after a clean stop, an error if serving failed or in-flight requests had
// to be cut off.
func (s *Server) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("httpgw: Run called twice")
	}
	if s.Addr() == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	s.mu.Lock()
	ln := s.ln
	s.mu.Unlock()

	var wg sync.WaitGroup
	defer wg.Wait()
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	if s.keys != nil {
		wg.Go(func() { s.keys.watch(watchCtx, s.keyCheckEvery) })
	}
	if s.certs != nil {
		// Each request checks its certificate against the CRL in use:
		// nothing to do on a change.
		wg.Go(func() { s.certs.Watch(watchCtx, s.keyCheckEvery, nil) })
	}

	if s.tickets != nil {
		wg.Go(func() { s.tickets.Watch(watchCtx, s.keyCheckEvery) })
	}

	served := make(chan error, 1)
	go func() {
		if s.srv.TLSConfig != nil {
			served <- s.srv.ServeTLS(ln, "", "")
		} else {
			served <- s.srv.Serve(ln)
		}
	}()
	select {
	case err := <-served:
		return fmt.Errorf("serve http on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}

	s.draining.Store(true)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := s.srv.Shutdown(sctx); err != nil {
		_ = s.srv.Close()
		<-served
		return fmt.Errorf("shut down http gateway: requests still in flight after %s were cut off: %w", s.cfg.ShutdownTimeout, err)
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve http on %s: %w", ln.Addr(), err)
	}
	return nil
}

var (
	bodyOK      = []byte(`{"status":"ok"}`)
	bodyNoCheck = []byte(`{"status":"unavailable","error":"database check not configured"}`)
)

// handleHealth answers /health (the seed's) and /livez: the process serves.
func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) int {
	return writeJSON(w, http.StatusOK, bodyOK)
}

func (s *Server) handleHealthDB(w http.ResponseWriter, r *http.Request) int {
	if s.dbCheck == nil {
		return writeJSON(w, http.StatusServiceUnavailable, bodyNoCheck)
	}
	ctx, cancel := context.WithTimeout(r.Context(), dbCheckTimeout)
	defer cancel()
	if err := s.dbCheck(ctx); err != nil {
		b := appendJSONString([]byte(`{"status":"unavailable","error":`), err.Error())
		return writeJSON(w, http.StatusServiceUnavailable, append(b, '}'))
	}
	return writeJSON(w, http.StatusOK, bodyOK)
}

// StartDraining turns readiness to 503 (shutting_down) while the gateway
// still serves, so load balancers polling /readyz stop routing here before
// Run's context ends and the listener closes.
func (s *Server) StartDraining() { s.draining.Store(true) }

// handleReadyz answers 200 while readings would be accepted, else 503 with
// the reason (shutting_down, or the producer's: backlog_full, ...). While
// only some shards are unavailable (a Redis Cluster node is down) it answers
// 200 {"status":"degraded","unavailable_shards":[...]}: readings of the other
// shards are accepted, and another gateway would refuse the same ones.
func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) int {
	reason, msg := "", ""
	if s.draining.Load() {
		reason, msg = "shutting_down", "the gateway is shutting down"
	} else if err := s.p.Ready(); err != nil {
		reason, msg = ingest.RefusalReason(err), err.Error()
	}
	if reason == "" {
		if sp, ok := s.p.(shardedProducer); ok {
			if down := sp.UnavailableShards(); len(down) > 0 {
				b := []byte(`{"status":"degraded","unavailable_shards":[`)
				for i, shard := range down {
					if i > 0 {
						b = append(b, ',')
					}
					b = strconv.AppendInt(b, int64(shard), 10)
				}
				return writeJSON(w, http.StatusOK, append(b, "]}"...))
			}
		}
		return writeJSON(w, http.StatusOK, bodyOK)
	}
	b := appendJSONString([]byte(`{"status":"unavailable","reason":`), reason)
	b = appendJSONString(append(b, `,"error":`...), msg)
	return writeJSON(w, http.StatusServiceUnavailable, append(b, '}'))
}

// serveMetrics adapts the Prometheus handler to the instrumented shape.
func serveMetrics(h http.Handler) func(http.ResponseWriter, *http.Request) int {
	return func(w http.ResponseWriter, r *http.Request) int {
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(sw, r)
		return sw.code
	}
}

// statusWriter remembers the status code a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	code    int
	written bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.written {
		w.code, w.written = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.written = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// readBody reads r's body into buf, refusing more than max bytes with an
// *http.MaxBytesError. A body that cannot be read (the client went away, the
// read timed out) is a 400.
func readBody(w http.ResponseWriter, r *http.Request, max int64, buf []byte) ([]byte, error) {
	if r.ContentLength > max {
		// Refused unread; closing the connection spares reading the rest.
		w.Header().Set("Connection", "close")
		return buf, &http.MaxBytesError{Limit: max}
	}
	body := http.MaxBytesReader(w, r.Body, max)
	if r.ContentLength > 0 {
		// Room for the declared length, +1 so the final Read finds EOF
		// without growing; capped, since the client declares it before
		// sending anything.
		buf = slices.Grow(buf, int(min(r.ContentLength, 256<<10))+1)
	}
	for {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, 512)
		}
		n, err := body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		switch {
		case err == io.EOF:
			return buf, nil
		case err != nil:
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				return buf, err
			}
			return buf, refusal(http.StatusBadRequest, reasonInvalid, "read request body: "+err.Error())
		}
	}
}

// mediaType classifies a Content-Type header: "" (JSON), application/json or
// application/x-ndjson, parameters ignored.
func mediaType(ct string) (ndjson bool, err error) {
	if ct == "" {
		return false, nil
	}
	mt, _, _ := strings.Cut(ct, ";")
	mt = strings.TrimSpace(mt)
	switch {
	case strings.EqualFold(mt, "application/json"):
		return false, nil
	case strings.EqualFold(mt, "application/x-ndjson"):
		return true, nil
	}
	if len(mt) > 100 {
		mt = mt[:100] + "..."
	}
	return false, refusal(http.StatusUnsupportedMediaType, reasonMediaType,
		fmt.Sprintf("unsupported content type %q: use application/json or application/x-ndjson", mt))
}
