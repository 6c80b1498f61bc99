// Command bare is the ceiling firehose's HTTP gateway is measured against: a
// net/http handler that decodes the seed's small JSON body and answers,
// with no validation, no Redis and no PostgreSQL.
//
//	go run ./internal/benchtools/bare -addr 127.0.0.1:18081
package main
