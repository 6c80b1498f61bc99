-- 006_bridge_members: the live bridges of each deployment, so that they share the shards.
--
-- Each bridge process is a member while it runs: it inserts its row when it starts (and
-- again after losing its PostgreSQL session), updates seen_at and shards_owned every
-- --lock-retry, and deletes its row when it stops. It holds the advisory lock lock_key on
-- the session that writes the row, so a bridge whose process died (its connections closed)
-- stops counting at once; one whose host or network froze stops counting once PostgreSQL
-- ends that idle session or its seen_at is --bridge-session-timeout old, whichever comes
-- first. Any member deletes the rows of dead members. With K live members and N shards the
-- bridge k-th by (started_at, id) owns floor(N / K) shards, one more if k < N mod K: never
-- more than ceil(N / K). The shard's advisory lock stays the fence (one writer per shard);
-- this table only decides who tries to take which shard, and who hands one over.
--   id            text: random, new each time the bridge (re)joins.
--   prefix        text: the deployment's Redis prefix (--redis-prefix): deployments sharing
--                 a database do not count each other's bridges.
--   host, pid     the bridge process, for operators (firehose status).
--   lock_key      bigint: the advisory lock the member's session holds while it lives.
--   started_at    when the member joined (PostgreSQL's clock): the order of the shares.
--   seen_at       the member's last heartbeat (PostgreSQL's clock: bridges' clocks may differ).
--   shards_owned  shards the bridge held at its last heartbeat: free shards go first to the
--                 members furthest below their share.
CREATE TABLE bridge_members (
    id           text        PRIMARY KEY,
    prefix       text        NOT NULL,
    host         text        NOT NULL,
    pid          integer     NOT NULL,
    lock_key     bigint      NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    seen_at      timestamptz NOT NULL DEFAULT now(),
    shards_owned integer     NOT NULL DEFAULT 0
);
CREATE INDEX bridge_members_prefix_idx ON bridge_members (prefix, started_at, id);
