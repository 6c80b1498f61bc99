package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Component is one running part of a process, with a context of its own so
// that a Group stops the parts one after another.
type Component struct {
	name   string
	cancel context.CancelFunc
	done   chan struct{} // closed when run returned
	err    error         // what run returned; read after done
}

// Start runs run in a goroutine until its context is cancelled by the
// Group the component is added to.
func Start(name string, run func(context.Context) error) *Component {
	ctx, cancel := context.WithCancel(context.Background())
	c := &Component{name: name, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		c.err = run(ctx)
	}()
	return c
}

// Group is a process's components in stages, in stop order: each stage is
// stopped in parallel once the one before has finished.
type Group struct {
	// Timeout bounds each stage's stop (the process's --shutdown-timeout):
	// a stage still running a little after it is abandoned.
	Timeout time.Duration
	// Delay, when positive, is how long Wait keeps serving after ctx ends,
	// with Drain called first (--shutdown-delay).
	Delay time.Duration
	Log   *slog.Logger
	// Drain, when not nil, turns the process's readiness to 503; it is
	// called when the delay starts and when the stop starts.
	Drain func()
	// Close, when not nil, closes what the components share (connections,
	// listeners) once they stopped, or a stage was abandoned.
	Close func()

	stages [][]*Component
}

// Add appends a stage of components (possibly none).
func (g *Group) Add(stage ...*Component) { g.stages = append(g.stages, stage) }

func (g *Group) parts() []*Component {
	var all []*Component
	for _, stage := range g.stages {
		all = append(all, stage...)
	}
	return all
}

// Wait runs until ctx ends or a component fails, then stops the components
// stage by stage.
func (g *Group) Wait(ctx context.Context) error {
	parts := g.parts()
	failures := make(chan error, len(parts))
	watching := make(chan struct{})
	for _, c := range parts {
		go func() {
			select {
			case <-c.done:
				if c.err != nil {
					failures <- fmt.Errorf("%s: %w", c.name, c.err)
				}
			case <-watching:
			}
		}()
	}
	var failed error
	select {
	case <-ctx.Done():
		if g.Delay > 0 {
			failed = g.delayShutdown(failures)
		}
		g.Log.Info("shutting down", "timeout", g.Timeout)
	case failed = <-failures:
		g.Log.Error("component failed; shutting down", "err", failed)
	}
	close(watching)
	if failed != nil {
		// Reported once, above, not again by Stop.
		return errors.Join(failed, g.Stop(true))
	}
	return g.Stop(false)
}

func (g *Group) drain() {
	if g.Drain != nil {
		g.Drain()
	}
}

func (g *Group) close() {
	if g.Close != nil {
		g.Close()
	}
}

// delayShutdown keeps serving for Delay with readiness answering 503, so
// load balancers stop routing here before the listeners close. Another
// SIGTERM or Ctrl-C ends the wait, and so does a component's failure,
// which it returns.
func (g *Group) delayShutdown(failures <-chan error) error {
	g.drain()
	g.Log.Info("readiness answers 503; intake stops after the shutdown delay", "delay", g.Delay)
	again := make(chan os.Signal, 1)
	signal.Notify(again, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(again)
	t := time.NewTimer(g.Delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-again:
		g.Log.Info("signalled again: shutting down now")
	case err := <-failures:
		g.Log.Error("component failed; shutting down", "err", err)
		return err
	}
	return nil
}

// Stop stops the stages in order, the components of a stage in parallel,
// and calls Close. Each stage bounds itself by Timeout; a stage still
// running a little after it is abandoned, and Stop returns an error. After
// a failure (afterFailure), the components' errors are not returned again.
func (g *Group) Stop(afterFailure bool) error {
	g.drain()
	var errs []error
	for _, stage := range g.stages {
		for _, c := range stage {
			c.cancel()
		}
		deadline := time.NewTimer(g.Timeout + 5*time.Second)
		for _, c := range stage {
			select {
			case <-c.done:
				if c.err != nil && !afterFailure {
					errs = append(errs, fmt.Errorf("stop %s: %w", c.name, c.err))
				}
			case <-deadline.C:
				g.close()
				return fmt.Errorf("stop %s: not done within the shutdown timeout %s", c.name, g.Timeout)
			}
		}
		deadline.Stop()
	}
	g.close()
	if len(errs) == 0 {
		g.Log.Info("stopped cleanly")
	}
	return errors.Join(errs...)
}
