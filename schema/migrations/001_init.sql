-- 001_init: the tables of the core pipeline.
--
-- readings: one row per acknowledged reading, written only by the bridge's COPY.
--   id          bigint identity, never set by a client (the seed's lesson: a counter
--               in the application was a bottleneck). CACHE 1000: each bridge session
--               takes sequence values a thousand at a time instead of one WAL-logged
--               nextval per row; the gaps a restart leaves are harmless.
--   device_id   text COLLATE "C": validated at the edge (1-128 bytes of printable UTF-8,
--               no '/', '+', '#'); text costs nothing over varchar(n) and a new limit needs
--               no rewrite. Ids are identifiers, not words: byte order ("C") compares
--               with memcmp instead of the locale's rules, which keeps index inserts cheap,
--               and matches the order the bridge sorts each batch in.
--   ts          timestamptz: when the device measured the value (its own clock), or the
--               time of receipt when it did not say. An instant, never a local time.
--   received_at timestamptz: when an edge of firehose received the reading.
--   reading     double precision: holds every number the edge accepts (the edge refuses
--               what a 64-bit float cannot hold, and NaN/Infinity) and the seed's
--               smallint readings exactly; numeric would cost CPU on every row.
--   payload     jsonb, NULL without extra fields: the reading's other JSON fields,
--               binary and indexable (GIN) when a deployment needs it.
-- Keys: the primary key is id alone and (device_id, ts) serves "a device over time".
-- Nothing depends on id being unique by itself: time partitioning will make the key
-- (id, ts), and a distributed PostgreSQL keyed by device_id would make it (device_id, id).
CREATE TABLE readings (
    id          bigint GENERATED ALWAYS AS IDENTITY (CACHE 1000),
    device_id   text COLLATE "C" NOT NULL,
    ts          timestamptz      NOT NULL,
    received_at timestamptz      NOT NULL,
    reading     double precision NOT NULL,
    payload     jsonb,
    PRIMARY KEY (id)
);
CREATE INDEX readings_device_ts_idx ON readings (device_id, ts);

-- bridge_checkpoints: per shard stream, the id of the last entry committed to readings.
-- Written in the same transaction as the COPY of the batch it ends, so after a crash the
-- bridge resumes right after it: nothing is written twice, nothing skipped.
--   stream   text: the stream key, e.g. 'firehose:readings:{3}' (one row per shard and
--            deployment prefix, so deployments can share a database).
--   last_id  text: a Redis stream id '<ms>-<seq>'; compared in Go, never in SQL.
--   rows     bigint: rows committed through this stream, for operators.
CREATE TABLE bridge_checkpoints (
    stream     text        PRIMARY KEY,
    last_id    text        NOT NULL,
    rows       bigint      NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- readings_rejected: stream entries the bridge could not write (an encoding it cannot
-- decode, or a value PostgreSQL refuses). Kept with the raw entry and the error so an
-- operator can repair and replay them; the rest of their batch commits.
--   raw      bytea: the entry's body exactly as it was in the stream (any bytes).
--   version  text: the encoding version the entry named, NULL when it named none.
CREATE TABLE readings_rejected (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream      text        NOT NULL,
    entry_id    text        NOT NULL,
    version     text,
    raw         bytea       NOT NULL,
    error       text        NOT NULL,
    rejected_at timestamptz NOT NULL DEFAULT now()
);
