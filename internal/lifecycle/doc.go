// Package lifecycle runs a process's components and stops them stage by
// stage: on a signal (after an optional delay with readiness draining) or a
// component's failure, each stage is cancelled and awaited, bounded by a
// timeout, before the next one, so that what feeds a part stops before it.
//
//	g := &lifecycle.Group{Timeout: 15 * time.Second, Log: logger, Close: closeConns}
//	g.Add(lifecycle.Start("httpgw", srv.Run))
//	g.Add(lifecycle.Start("producer", producer.Run))
//	err := g.Wait(ctx)
package lifecycle
