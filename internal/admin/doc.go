// Package admin serves a process's admin endpoints when the HTTP gateway
// does not run in it: /metrics, /livez, /health and /readyz on --admin-addr,
// and Go's profiles on --debug-addr.
//
//	srv, err := admin.Listen(":9090", registry, admin.Readyz(&draining, producer), logger)
//	go srv.Run(ctx)
package admin
