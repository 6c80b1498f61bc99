-- 008_edge_dead_letters: messages an edge acknowledged that could not become readings yet.
--
-- An edge that must acknowledge a message it cannot turn into readings (an invalid payload
-- from an MQTT 3.1.1 client, which has no way to be told; a Sparkplug B DATA before its
-- birth certificate or with an alias no birth gave) writes the whole message to its shard
-- stream as a dead letter before the acknowledgement; the bridge lands it here, in the
-- transaction of its batch. `firehose rejected replay` runs the message through the same
-- decode path again (a Sparkplug DATA resolves once its birth is known) and lands its
-- readings at most once, as for every row of this table (see 004).
--   source       text: 'bridge' for an entry the bridge could not write (the rows before
--                this migration), 'edge' for an edge dead letter.
--   raw          on an edge dead letter: the message's payload, byte for byte.
--   version      on an edge dead letter: '5', the dead-letter encoding.
--   error        on an edge dead letter: why the edge could not make readings of it.
--   edge_kind    text: the decode path the message took and a replay takes again: 'topic'
--                (the readings topic), 'rule' (a mapping rule), 'sparkplug'.
--   topic        text: the MQTT topic it was published on.
--   client_id    text, username text: the client that published it.
--   device_id    text: the device (or Sparkplug group/edge_node[/device]) it is of, if known.
--   received_at  timestamptz: when the edge received it; the time of receipt of its replay.
ALTER TABLE readings_rejected
    ADD COLUMN source      text NOT NULL DEFAULT 'bridge',
    ADD COLUMN edge_kind   text,
    ADD COLUMN topic       text,
    ADD COLUMN client_id   text,
    ADD COLUMN username    text,
    ADD COLUMN device_id   text,
    ADD COLUMN received_at timestamptz;
