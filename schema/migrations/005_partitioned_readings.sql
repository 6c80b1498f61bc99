-- 005_partitioned_readings: readings becomes a table range-partitioned on ts.
--
-- Why: every batch the bridge commits inserts into the (device_id, ts) index at as many
-- places as it has devices. Once that index no longer fits in memory each insert reads a
-- leaf page from disk, and ingest slows as the table grows (5x at 30M rows, BENCHMARKS.md).
-- With one partition per interval of ts, a batch of current readings inserts only into the
-- current partition's indexes, which stay as small as one interval's rows.
--
-- Why firehose keeps the partitions, not pg_partman: declarative partitioning does the
-- routing (COPY into the parent puts each row in its partition), and what is left —
-- create the next partitions, drop those past retention — is a few statements the bridge
-- runs (package partition) under an advisory lock, so every deployment takes the same code
-- path. pg_partman is an extension that most managed and container PostgreSQLs lack or
-- need configured (shared_preload_libraries for its background worker, or a cron), it would
-- be a second owner of the same tables, and its default-partition handling
-- (partition_data_time) is a manual step we would have to drive anyway.
--
-- Layout:
--   readings           PARTITION BY RANGE (ts); the primary key is (id, ts) (a partitioned
--                      table's unique keys must include the partition key; nothing depends
--                      on id alone, see 001) and (device_id, ts) is indexed as before.
--   readings_pYYYYMMDD[_HHMM]  one partition per interval, [lower, upper) in UTC, created
--                      ahead of time by the bridge (package partition).
--   readings_default   the DEFAULT partition: a reading whose ts has no partition (far in
--                      the past or future, or before the first bridge made one) is stored
--                      there, never refused; the bridge moves such rows into a partition
--                      when it creates one for their range.
--   readings_unpartitioned  the rows of the table this migration replaces, kept as they
--                      were and attached as the partition FROM (MINVALUE) TO (the next UTC
--                      midnight); dropped at once when the table was empty. Retention drops
--                      it as a whole, once its upper bound is past --retention.
--   firehose_partitioning  one row: the partition interval, recorded so that every bridge
--                      uses the same one. NULL until the first bridge records its
--                      --partition-interval (default 24h); a bridge started with another
--                      interval refuses to start. See docs/partitions.md.
--
-- What it locks, on a table with rows: this migration runs in schema.Apply's transaction,
-- so it holds ACCESS EXCLUSIVE on the old table (taken by the RENAME) until it commits.
-- Under that lock it reads the old table twice (moving rows dated after the cutover to
-- readings_default, then ATTACH's check that every row is before the cutover). The new
-- (id, ts) primary-key index was built before, outside the transaction, by CREATE UNIQUE
-- INDEX CONCURRENTLY (schema.Apply's prepare step: writers go on meanwhile), and the
-- (device_id, ts) index is kept: both are adopted as the partition's, not rebuilt. No row is copied except those dated after the cutover.
-- Meanwhile the bridges' COPYs wait (each shard's batch keeps its stream entries pending)
-- and SELECTs on readings wait; the HTTP and MQTT edges keep acknowledging into Redis (up
-- to --high-water of backlog), so devices are not refused unless the wait outlasts that.
-- Measured: a writer waited at most 326 ms while 3M rows (519 MB) migrated
-- (docs/partitions.md).
-- Distributed later (Citus, Timescale): see the same page.

CREATE TABLE firehose_partitioning (
    one_row          boolean     PRIMARY KEY DEFAULT true CHECK (one_row),
    interval_seconds bigint      CHECK (interval_seconds > 0),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
INSERT INTO firehose_partitioning DEFAULT VALUES;

ALTER TABLE readings RENAME TO readings_unpartitioned;
ALTER INDEX readings_pkey RENAME TO readings_unpartitioned_pkey;
ALTER INDEX readings_device_ts_idx RENAME TO readings_unpartitioned_device_ts_idx;

CREATE TABLE readings (
    id           bigint GENERATED ALWAYS AS IDENTITY (CACHE 1000),
    device_id    text COLLATE "C" NOT NULL,
    ts           timestamptz      NOT NULL,
    received_at  timestamptz      NOT NULL,
    reading      double precision NOT NULL,
    payload      jsonb,
    committed_at timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (id, ts)
) PARTITION BY RANGE (ts);
CREATE INDEX readings_device_ts_idx ON readings (device_id, ts);
CREATE TABLE readings_default PARTITION OF readings DEFAULT;

DO $$
DECLARE
    old_seq  text := pg_get_serial_sequence('readings_unpartitioned', 'id');
    last     bigint;
    called   boolean;
    -- The next UTC midnight: the old table keeps the rest of today's rows (it is today's
    -- partition), and the bridge's partitions start there.
    cutover  timestamptz := (date_trunc('day', now() AT TIME ZONE 'UTC') + interval '1 day') AT TIME ZONE 'UTC';
BEGIN
    -- ids go on from where the old identity stopped (last_value is past every value a
    -- session has cached), so (id) stays unique across old and new rows.
    EXECUTE format('SELECT last_value, is_called FROM %s', old_seq) INTO last, called;
    PERFORM setval(pg_get_serial_sequence('readings', 'id'), last, called);

    IF NOT EXISTS (SELECT 1 FROM readings_unpartitioned) THEN
        DROP TABLE readings_unpartitioned;
        RETURN;
    END IF;

    -- A partition has no identity of its own: ids come from the parent's.
    ALTER TABLE readings_unpartitioned ALTER COLUMN id DROP IDENTITY;
    -- Its primary key (id) gives way to the parent's (id, ts): the index schema.Apply built
    -- beforehand without blocking writers (CREATE INDEX CONCURRENTLY), else one ATTACH
    -- builds under the lock (Apply given a transaction, or the build failed).
    ALTER TABLE readings_unpartitioned DROP CONSTRAINT readings_unpartitioned_pkey;
    IF (SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('readings_id_ts_key')) THEN
        ALTER TABLE readings_unpartitioned ADD CONSTRAINT readings_unpartitioned_pkey PRIMARY KEY USING INDEX readings_id_ts_key;
    ELSIF to_regclass('readings_id_ts_key') IS NOT NULL THEN
        DROP INDEX readings_id_ts_key;
    END IF;

    -- Rows dated after the cutover (device clocks in the future) belong to later partitions:
    -- they move to the default partition, from which the bridge moves them on.
    WITH moved AS (
        DELETE FROM readings_unpartitioned WHERE ts >= cutover
        RETURNING id, device_id, ts, received_at, reading, payload, committed_at)
    INSERT INTO readings_default (id, device_id, ts, received_at, reading, payload, committed_at)
    SELECT id, device_id, ts, received_at, reading, payload, committed_at FROM moved;

    EXECUTE format('ALTER TABLE readings ATTACH PARTITION readings_unpartitioned FOR VALUES FROM (MINVALUE) TO (%L)', cutover);
END
$$;
