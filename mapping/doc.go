// Package mapping turns the messages of real devices (an MQTT topic or an
// HTTP endpoint, and a JSON payload) into the readings they carry, by
// rules: which topic levels name the device and which become tags, where the
// time is and how it is written, which fields are metrics (a list, or every
// numeric field), and where an array of samples is. One message becomes a
// row per metric (and per sample), all acknowledged together or not at all:
// a message a rule cannot map is refused whole with an *Error naming the rule
// and the path.
//
// A rule that names a table (Rule.Table) makes each message (each sample)
// one typed row of that table instead: its columns take topic captures,
// paths, the device, the times and the message id, each checked against
// the column's PostgreSQL type at the edge; unknown fields are kept in a
// jsonb column, ignored or refused (Rule.Unknown); Mapper.Tables describes
// the tables for migrations.
//
// Paths are GJSON paths (github.com/tidwall/gjson): the syntax of Telegraf's
// json_v2 parser, which the users of the peers firehose replaces already
// write ("t", "sensor.temp", "samples", "values.0"), and a reader of JSON that
// needs no decoding into Go values.
package mapping
