-- 003_generation: tell a Redis that lost its tail from a new Redis, and one
-- deployment's database from another's.
--
-- firehose_deployment: one row, the identity of this database. The bridge records it in
-- each shard's metadata hash in Redis (<prefix>:meta:{N}, field "deployment") the first
-- time it touches the shard, and refuses to read, commit or trim a shard whose hash names
-- another deployment: two databases fed from one Redis prefix would otherwise trim each
-- other's streams. A restored backup of this database keeps its id, as it should.
--   one_row  boolean primary key, always true: at most one row.
--   id       uuid, random (gen_random_uuid() is built in since PostgreSQL 13).
CREATE TABLE firehose_deployment (
    one_row    boolean     PRIMARY KEY DEFAULT true CHECK (one_row),
    id         uuid        NOT NULL DEFAULT gen_random_uuid(),
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO firehose_deployment DEFAULT VALUES;

-- bridge_checkpoints.generation: the generation token of the stream the checkpoint's id
-- belongs to (field "generation" of the shard's metadata hash in Redis, created with
-- HSETNX by whichever role first touches the shard after Redis started empty). Same
-- token at a session start: the stream is the one the checkpoint was taken on, maybe
-- with a lost tail (an RDB snapshot, AOF everysec after a crash, a promoted replica),
-- and entries at or below the checkpoint are never read again. Another token: Redis
-- lost everything and the stream is new; it is read from its start.
--   NULL (rows written before this migration): the bridge adopts the token it finds in
--   Redis on its first session and writes it with its next checkpoint.
ALTER TABLE bridge_checkpoints ADD COLUMN generation text;
