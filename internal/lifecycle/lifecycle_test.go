package lifecycle

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder notes the order in which components stopped.
type recorder struct {
	mu    sync.Mutex
	order []string
}

func (r *recorder) run(name string, err error) func(context.Context) error {
	return func(ctx context.Context) error {
		<-ctx.Done()
		r.mu.Lock()
		r.order = append(r.order, name)
		r.mu.Unlock()
		return err
	}
}

func TestGroupStopsStagesInOrder(t *testing.T) {
	var r recorder
	closed, drained := false, false
	g := &Group{Timeout: time.Second, Log: slog.New(slog.DiscardHandler), Close: func() { closed = true }, Drain: func() { drained = true }}
	g.Add(Start("edge", r.run("edge", nil)))
	g.Add() // an empty stage is fine
	g.Add(Start("producer", r.run("producer", nil)))
	g.Add(Start("bridge", r.run("bridge", nil)))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := g.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.order, ","); got != "edge,producer,bridge" {
		t.Errorf("stopped %s, want edge,producer,bridge", got)
	}
	if !closed || !drained {
		t.Errorf("closed %v, drained %v; want both", closed, drained)
	}
}

func TestGroupStopsOnFailure(t *testing.T) {
	var r recorder
	g := &Group{Timeout: time.Second, Log: slog.New(slog.DiscardHandler)}
	boom := errors.New("boom")
	g.Add(Start("edge", r.run("edge", errors.New("not reported twice"))))
	g.Add(Start("bridge", func(context.Context) error { return boom }))
	err := g.Wait(context.Background())
	if !errors.Is(err, boom) || strings.Contains(err.Error(), "not reported twice") {
		t.Fatalf("Wait = %v, want the failure alone", err)
	}
	if len(r.order) != 1 {
		t.Errorf("edge not stopped: %v", r.order)
	}
}

func TestGroupAbandonsAStuckStage(t *testing.T) {
	g := &Group{Timeout: time.Millisecond, Log: slog.New(slog.DiscardHandler)}
	release := make(chan struct{})
	defer close(release)
	g.Add(Start("stuck", func(context.Context) error { <-release; return nil }))
	start := time.Now()
	err := g.Stop(false)
	if err == nil || !strings.Contains(err.Error(), "stop stuck: not done within the shutdown timeout") {
		t.Fatalf("Stop = %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Stop took %s", d)
	}
}
