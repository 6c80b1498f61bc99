// Package partition keeps the time partitions of readings and of the rules'
// typed tables ahead of time and drops those past retention.
//
// readings is range-partitioned on ts (schema migration 005). A Maintainer,
// run by every bridge, creates the partition of the current interval and the
// next few before rows need them, moves into a new partition the rows of its
// range that waited in readings_default, and, with a retention, detaches and
// drops the partitions whose whole range is older than it. Passes of several
// bridges are serialised by an advisory lock; the interval is recorded in the
// database (firehose_partitioning), so every bridge uses the same one.
//
// The typed tables of Config.Tables (created by firehose migrate,
// range-partitioned on their time column with a default partition
// TABLE_default) get the same: partitions TABLE_p20261201 of the same
// interval, the same retention, in a transaction of their own after
// readings'. The metrics count by table.
//
//	m := partition.New(partition.Config{Retention: 30 * 24 * time.Hour}, pool, logger, registry)
//	if err := m.Maintain(ctx); err != nil { ... } // once, before the bridge writes
//	go m.Run(ctx)                                 // then a pass every Config.Every until ctx ends
package partition
