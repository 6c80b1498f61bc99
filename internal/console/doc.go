// Package console serves the operator's web console on the admin address
// (--admin-addr, turned on by --admin-token): an overview page rendered
// from Go templates whose figures update live over server-sent events,
// computed from the process's own Prometheus registry and its health
// checks of Redis and PostgreSQL; the dead letters, listed, inspected and
// replayed; a mapping playground, device pages and the partitions with
// their retention. Each is read through a function or interface of Config
// that cmd/firehose implements (the console imports none of the roles).
//
//	c := console.New(console.Config{Token: token, Gatherer: reg, Checks: checks, DeadLetters: dl, Map: mapSample}, logger)
//	c.Register(mux) // GET /console/, POST /console/login, GET /console/events, /console/deadletters, /console/playground, ...
package console
