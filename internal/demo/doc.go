// Package demo is the demo's HTTP burst and its landing count: it posts a
// burst of readings to both HTTP endpoints, as devices demo-<run>-*, and
// counts in PostgreSQL how many of them landed. The MQTT fleet beside it is
// the simulator's; Fleet only configures it.
//
//	run := demo.NewRunID()
//	res := demo.Send(ctx, "http://127.0.0.1:8080", run, cfg)
//	rows, distinct, err := demo.WaitLanded(ctx, pool, run, res.Accepted.Load(), cfg.LandTimeout)
package demo
