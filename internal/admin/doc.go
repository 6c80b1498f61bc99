// Package admin serves a process's admin endpoints when the HTTP gateway
// does not run in it (or the web console is on): /metrics, /livez, /health
// and /readyz on --admin-addr, more routes through Mux (the console's), and
// Go's profiles on --debug-addr.
//
//	srv, err := admin.Listen(":9090", registry, admin.Readyz(&draining, producer), logger)
//	go srv.Run(ctx)
package admin
