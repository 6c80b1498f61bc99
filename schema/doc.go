// Package schema holds firehose's PostgreSQL schema as numbered SQL
// migrations embedded in the binary, and applies them.
//
// Migrations live in migrations/NNN_name.sql and are applied in order, each
// once, inside one transaction that holds an advisory lock, so concurrent
// starts of firehose never race:
//
//	applied, err := schema.Apply(ctx, conn) // conn: *pgx.Conn or *pgxpool.Pool
package schema
