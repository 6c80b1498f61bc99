// Package schema holds firehose's PostgreSQL schema as numbered SQL
// migrations embedded in the binary, applies them, and creates and checks
// the typed tables mapping rules declare.
//
// Migrations live in migrations/NNN_name.sql and are applied in order, each
// once, inside one transaction that holds an advisory lock, so concurrent
// starts of firehose never race:
//
//	applied, err := schema.Apply(ctx, conn) // conn: *pgx.Conn or *pgxpool.Pool
//
// Typed tables (typed.Table, from the rules) are created by firehose migrate
// and checked by the bridge at start:
//
//	changes, err := schema.EnsureTables(ctx, pool, tables, logger) // creates, adds columns, builds indexes
//	err = schema.CheckTables(ctx, pool, tables)                    // changes nothing; *Mismatch per difference
//
// DDL(t) is the statements that create one: the table range-partitioned by
// its time column, its default partition NAME_default and its indexes.
package schema
