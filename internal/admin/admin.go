package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"firehose/ingest"
)

// ListenDebug binds --debug-addr and returns the run function of a server of
// Go's profiles.
func ListenDebug(addr string, log *slog.Logger) (func(context.Context) error, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %v; choose another with --debug-addr", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Info("pprof listening", "addr", ln.Addr().String())
	return func(ctx context.Context) error {
		go func() {
			<-ctx.Done()
			srv.Close()
		}()
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("debug endpoint: %w", err)
		}
		return nil
	}, nil
}

// Server is the admin endpoint of --admin-addr.
type Server struct {
	srv *http.Server
	ln  net.Listener
	mux *http.ServeMux
	// stop ends the requests' context when Run's ends, so long-lived
	// responses (the console's server-sent events) let Shutdown finish.
	stop context.CancelFunc
}

// Listen binds --admin-addr: /metrics of g, /livez and /health (200 while
// the process runs) and readyz as /readyz.
func Listen(addr string, g prometheus.Gatherer, readyz http.HandlerFunc, log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %v; choose another with --admin-addr", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /livez", writeOK)
	mux.HandleFunc("GET /health", writeOK)
	mux.HandleFunc("GET /readyz", readyz)
	log.Info("admin endpoint listening", "addr", ln.Addr().String())
	base, stop := context.WithCancel(context.Background())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second,
		BaseContext: func(net.Listener) context.Context { return base }}
	return &Server{srv: srv, ln: ln, mux: mux, stop: stop}, nil
}

// Addr is the address the endpoint listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Mux is the endpoint's routes, for more handlers (the console) before Run.
func (s *Server) Mux() *http.ServeMux { return s.mux }

// Run serves until ctx ends, then shuts down within 2 s.
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("admin endpoint: %w", err)
	case <-ctx.Done():
		s.stop()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return s.srv.Shutdown(sctx)
	}
}

// Close closes the listener (already closed after a Shutdown; harmless).
func (s *Server) Close() {
	s.stop()
	s.ln.Close()
}

var bodyOK = []byte(`{"status":"ok"}`)

func writeOK(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, bodyOK) }

func writeJSON(w http.ResponseWriter, code int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

// Producer is what readiness asks of the process's producer.
type Producer interface {
	// Ready is nil while the producer takes readings.
	Ready() error
	// UnavailableShards lists the shards it refuses readings for.
	UnavailableShards() []int
}

// Readyz answers the admin endpoint's readiness, as the gateway's /readyz
// does: 503 once the process is shutting down (draining, from the start of
// --shutdown-delay), or while its producer p refuses readings (Redis down,
// backlog over the high-water mark); a process without a producer (nil: a
// bridge alone) is ready while it runs. While only some shards are
// unavailable it answers 200 "degraded" with their numbers, as the
// gateway's /readyz does.
func Readyz(draining *atomic.Bool, p Producer) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		reason, msg := "", ""
		if draining.Load() {
			reason, msg = "shutting_down", "firehose is shutting down"
		} else if p != nil {
			if err := p.Ready(); err != nil {
				reason, msg = ingest.RefusalReason(err), err.Error()
			}
		}
		if reason == "" {
			if p != nil {
				if down := p.UnavailableShards(); len(down) > 0 {
					body, _ := json.Marshal(struct {
						Status string `json:"status"`
						Down   []int  `json:"unavailable_shards"`
					}{"degraded", down})
					writeJSON(w, http.StatusOK, body)
					return
				}
			}
			writeJSON(w, http.StatusOK, bodyOK)
			return
		}
		body, _ := json.Marshal(struct {
			Status string `json:"status"`
			Reason string `json:"reason"`
			Error  string `json:"error"`
		}{"unavailable", reason, msg})
		writeJSON(w, http.StatusServiceUnavailable, body)
	}
}
