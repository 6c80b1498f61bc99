-- 002_committed_at: when each reading was committed to PostgreSQL.
--
-- committed_at timestamptz DEFAULT now(): now() is the start of the bridge's batch
-- transaction, a few milliseconds before its commit, and the same for every row of a
-- batch (evaluated per row but stable within the transaction, so it costs next to
-- nothing in a COPY). received_at -> committed_at is the pipeline's end-to-end latency,
-- which the simulator reports per reading. Existing rows get the time of this
-- migration (PostgreSQL 11+ adds a column with a non-volatile default without a rewrite).
ALTER TABLE readings ADD COLUMN committed_at timestamptz NOT NULL DEFAULT now();
