-- 004_rejected_replay: a dead letter can be replayed, and lands at most once.
--
-- `firehose rejected replay` re-submits a row of readings_rejected as a stream entry that
-- names the row (field replay_of). The bridge, in the transaction that commits the entry,
-- locks the row and claims it (replayed_at IS NULL -> now()), and writes the reading only if
-- that claim succeeded: a row replayed twice (a rerun after a crash of the command, two runs
-- at once, an entry duplicated in the stream) lands once.
--   replayed_at      timestamptz: when the bridge committed a replay of the row; NULL while
--                    the row waits. Set too when the replay was refused again: the refusal
--                    is a new row whose replay_of names this one, and that row is the one to
--                    repair and replay (so one dead letter never has two live copies).
--   replayed_stream  text, replayed_entry text: the stream and entry id of the replay that
--                    claimed the row.
--   replay_of        bigint: on a row that is a refused replay, the id of the row it
--                    replayed. No foreign key: operators may delete old rows.
ALTER TABLE readings_rejected
    ADD COLUMN replayed_at     timestamptz,
    ADD COLUMN replayed_stream text,
    ADD COLUMN replayed_entry  text,
    ADD COLUMN replay_of       bigint;

-- For the "refused again as" link of `firehose rejected list`; only refused replays are in it.
CREATE INDEX readings_rejected_replay_of_idx ON readings_rejected (replay_of) WHERE replay_of IS NOT NULL;
