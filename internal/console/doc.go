// Package console serves the operator's web console on the admin address
// (--admin-addr, turned on by --admin-token): an overview page rendered
// from Go templates whose figures update live over server-sent events,
// computed from the process's own Prometheus registry and its health
// checks of Redis and PostgreSQL; and the dead letters, listed, inspected
// and replayed through a DeadLetters the caller implements.
//
//	c := console.New(console.Config{Token: token, Gatherer: reg, Checks: checks, DeadLetters: dl}, logger)
//	c.Register(mux) // GET /console/, POST /console/login, GET /console/events, GET /console/deadletters...
package console
