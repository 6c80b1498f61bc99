package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"firehose/ingest"
)

// listenDebug binds --debug-addr and returns the run function of a server of
// Go's profiles.
func listenDebug(addr string, log *slog.Logger) (func(context.Context) error, error) {
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

// listenAdmin binds --admin-addr for processes without the HTTP gateway.
func (st *stack) listenAdmin() error {
	ln, err := net.Listen("tcp", st.cfg.AdminAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %v; choose another with --admin-addr", st.cfg.AdminAddr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(st.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /livez", writeOK)
	mux.HandleFunc("GET /health", writeOK)
	mux.HandleFunc("GET /readyz", st.handleReadyz)
	st.admin = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	st.adminLn = ln
	st.log.Info("admin endpoint listening", "addr", ln.Addr().String())
	return nil
}

func (st *stack) serveAdmin(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- st.admin.Serve(st.adminLn) }()
	select {
	case err := <-errc:
		return fmt.Errorf("admin endpoint: %w", err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return st.admin.Shutdown(sctx)
	}
}

var bodyOK = []byte(`{"status":"ok"}`)

func writeOK(w http.ResponseWriter, _ *http.Request) { writeAdminJSON(w, http.StatusOK, bodyOK) }

func writeAdminJSON(w http.ResponseWriter, code int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

// handleReadyz answers the admin endpoint's readiness, as the gateway's
// /readyz does: 503 once the process is shutting down (from the start of
// --shutdown-delay), or while its producer refuses readings (Redis down,
// backlog over the high-water mark); a bridge-only process is ready while it
// runs. While only some shards are unavailable it answers 200 "degraded" with
// their numbers, as the gateway's /readyz does.
func (st *stack) handleReadyz(w http.ResponseWriter, _ *http.Request) {
	reason, msg := "", ""
	if st.draining.Load() {
		reason, msg = "shutting_down", "firehose is shutting down"
	} else if st.producer != nil {
		if err := st.producer.Ready(); err != nil {
			reason, msg = ingest.RefusalReason(err), err.Error()
		}
	}
	if reason == "" {
		if st.producer != nil {
			if down := st.producer.UnavailableShards(); len(down) > 0 {
				body, _ := json.Marshal(struct {
					Status string `json:"status"`
					Down   []int  `json:"unavailable_shards"`
				}{"degraded", down})
				writeAdminJSON(w, http.StatusOK, body)
				return
			}
		}
		writeAdminJSON(w, http.StatusOK, bodyOK)
		return
	}
	body, _ := json.Marshal(struct {
		Status string `json:"status"`
		Reason string `json:"reason"`
		Error  string `json:"error"`
	}{"unavailable", reason, msg})
	writeAdminJSON(w, http.StatusServiceUnavailable, body)
}
