// Package console serves the operator's web console on the admin address
// (--admin-addr, turned on by --admin-token): an overview page rendered
// from Go templates whose figures update live over server-sent events,
// computed from the process's own Prometheus registry and its health
// checks of Redis and PostgreSQL.
//
//	c := console.New(console.Config{Token: token, Gatherer: reg, Checks: checks}, logger)
//	c.Register(mux) // GET /console/, POST /console/login, GET /console/events
package console
