package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"firehose/broker"
	"firehose/ingest"
	"firehose/internal/cli"
	"firehose/stream"
)

// firehose rejected: the dead letters of readings_rejected, listed and
// replayed. A replay is a stream entry naming its row (ingest.ReplayValues);
// the bridge claims the row in the transaction that commits the entry, so a
// row lands once however often it is sent: this command may crash, run twice
// or run beside another copy of itself without a reading landing twice.

const rejectedUsage = `Usage:
  firehose rejected list   [flags]   show the entries the bridge rejected (readings_rejected)
  firehose rejected replay [flags]   send rejected entries through the pipeline again, each at most once

Run "firehose rejected list --help" or "firehose rejected replay --help" for the flags.
`

// replayBatch is how many replay entries one pipelined round trip carries,
// and how many rows one page of --all reads.
const replayBatch = 500

// rejectedConfig is what firehose rejected reads from flags and environment.
type rejectedConfig struct {
	conn     serveConfig // --postgres, --redis, --redis-prefix, --shards, --log-*
	Limits   ingest.Limits
	Since    string
	Limit    int
	JSON     bool
	Replayed bool
	IDs      idList
	All      bool
	Reading  string
	Wait     time.Duration

	since time.Time // parsed Since; zero without
}

// idList is a --id flag: repeated, or comma-separated.
type idList []int64

func (l *idList) String() string {
	s := make([]string, len(*l))
	for i, id := range *l {
		s[i] = strconv.FormatInt(id, 10)
	}
	return strings.Join(s, ",")
}

func (l *idList) Set(v string) error {
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		id, err := strconv.ParseInt(f, 10, 64)
		if err != nil || id <= 0 {
			return fmt.Errorf("%q is not a row id (the ID column of firehose rejected list)", f)
		}
		*l = append(*l, id)
	}
	return nil
}

func runRejected(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, rejectedUsage)
		return usageError{errors.New("rejected: name a subcommand, list or replay")}
	}
	sub, rest := args[0], args[1:]
	switch sub {
	case "help", "-h", "--help":
		fmt.Fprint(stdout, rejectedUsage)
		return nil
	case "list", "replay":
	default:
		return usageError{fmt.Errorf("rejected: unknown subcommand %q: want list or replay", sub)}
	}
	cfg, err := parseRejected(sub, rest, stderr)
	if err != nil {
		return err
	}
	logger, err := newLogger(cfg.conn.LogLevel, cfg.conn.LogFormat, stderr)
	if err != nil {
		return usageError{err}
	}
	redis.SetLogger(redisLogger{logger})
	pg, err := connectPostgres(ctx, cfg.conn.Postgres)
	if err != nil {
		return err
	}
	defer pg.Close()
	if sub == "list" {
		return listRejected(ctx, pg, cfg, stdout)
	}
	rdb, err := connectRedis(ctx, cfg.conn.Redis, cfg.conn.RedisSentinelMaster, cfg.conn.RedisCluster, 4)
	if err != nil {
		return err
	}
	defer rdb.Close()
	return replayRejected(ctx, pg, rdb, cfg, stdout, stderr)
}

// parseRejected parses the flags of `firehose rejected sub` into a checked
// config.
func parseRejected(sub string, args []string, stderr io.Writer) (*rejectedConfig, error) {
	var cfg rejectedConfig
	var fs *cli.FlagSet
	if sub == "list" {
		fs = cli.NewFlagSet("rejected list", "firehose rejected list [flags]",
			"Lists the rows of readings_rejected of this deployment (--redis-prefix), oldest first: stream entries the\n"+
				"bridge could not decode or PostgreSQL refused, with the error and what the entry holds. Rows already\n"+
				"replayed are left out unless --replayed is given.")
		fs.IntVar(&cfg.Limit, "limit", 50, "show at most this many rows (0: all)")
		fs.BoolVar(&cfg.JSON, "json", false, "print one JSON object per row and line, for scripts, instead of a table")
		fs.BoolVar(&cfg.Replayed, "replayed", false, "also list rows already replayed")
	} else {
		fs = cli.NewFlagSet("rejected replay", "firehose rejected replay (--id N[,N...] | --all) [flags]",
			"Sends rejected entries through the pipeline again: each is decoded, validated as the edges validate,\n"+
				"and written to its device's shard stream as a replay entry naming its row; the bridge writes it and marks\n"+
				"the row replayed in one transaction. A row is replayed at most once: running this again, after a crash or\n"+
				"beside another run, does not land a reading twice; a row already replayed is refused. An entry that does\n"+
				"not decode is replayed with its repair: --id N --reading '{\"device_id\":\"...\",\"reading\":1.5,\"ts\":\"...\"}'.\n"+
				"A replay the bridge refuses again becomes a new row (its replay_of names the old one).")
		fs.Var(&cfg.IDs, "id", "replay the row with this id (repeat the flag, or separate ids with commas)")
		fs.BoolVar(&cfg.All, "all", false, "replay every row not yet replayed (with --since: rejected since then); rows that need a repair are skipped")
		fs.StringVar(&cfg.Reading, "reading", "", "with one --id: the repaired reading as a JSON object, as POST /v1/readings takes it\n(device_id and reading required, ts optional: RFC 3339; other fields are extra fields)")
		fs.CommandLineOnly("id", "all", "reading")
		fs.DurationVar(&cfg.Wait, "wait", time.Minute, "wait this long for the bridge to commit the replays and report how each ended (0: do not wait)")
		cfg.Limits.RegisterFlags(fs.FlagSet)
	}
	fs.StringVar(&cfg.Since, "since", "", "only rows rejected since then: a duration back from now (24h, 90m) or an RFC 3339 time")
	cfg.conn.registerCommon(fs.FlagSet)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err}
	}
	if fs.NArg() > 0 {
		return nil, usageError{fmt.Errorf("rejected %s takes no arguments, got %q (row ids go in --id)", sub, fs.Args())}
	}
	if err := cfg.validate(sub); err != nil {
		return nil, usageError{err}
	}
	return &cfg, nil
}

func (c *rejectedConfig) validate(sub string) error {
	if err := c.conn.Streams.Validate(); err != nil {
		return err
	}
	if c.Since != "" {
		if d, err := time.ParseDuration(c.Since); err == nil && d > 0 {
			c.since = time.Now().Add(-d)
		} else if t, err := time.Parse(time.RFC3339Nano, c.Since); err == nil {
			c.since = t
		} else {
			return fmt.Errorf("--since %q: want a positive duration (24h) or an RFC 3339 time (2026-11-28T08:00:00Z)", c.Since)
		}
	}
	if sub == "list" {
		if c.Limit < 0 {
			return fmt.Errorf("--limit %d: want 0 (all) or more", c.Limit)
		}
		return nil
	}
	switch {
	case len(c.IDs) == 0 && !c.All:
		return errors.New("say which rows to replay: --id N (see firehose rejected list) or --all")
	case len(c.IDs) > 0 && c.All:
		return errors.New("--id and --all exclude each other")
	case c.Since != "" && !c.All:
		return errors.New("--since applies to --all; with --id the ids say which rows")
	case c.Reading != "" && len(c.IDs) != 1:
		return errors.New("--reading repairs one row: give exactly one --id with it")
	case c.Wait < 0:
		return fmt.Errorf("--wait %s: want 0 (do not wait) or more", c.Wait)
	}
	return nil
}

// rejectedRow is a row of readings_rejected.
type rejectedRow struct {
	ID             int64
	Stream         string
	EntryID        string
	Version        *string
	Raw            []byte
	Error          string
	RejectedAt     time.Time
	ReplayedAt     *time.Time
	ReplayedStream *string
	ReplayedEntry  *string
	ReplayOf       *int64
	RefusedAs      *int64 // the row a refused replay of this one became
	// An edge dead letter's (Source "edge", see ingest.DeadLetter): Raw is
	// the message's payload; the rest of the message is in these.
	Source     string
	EdgeKind   *string
	Topic      *string
	ClientID   *string
	Username   *string
	DeviceID   *string
	ReceivedAt *time.Time
}

// edge reports whether the row is an edge dead letter.
func (r *rejectedRow) edge() bool { return r.Source == "edge" }

// deadLetter is the edge dead letter the row holds.
func (r *rejectedRow) deadLetter() ingest.DeadLetter {
	s := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	d := ingest.DeadLetter{Source: ingest.SourceMQTT, Kind: s(r.EdgeKind), Topic: s(r.Topic), ClientID: s(r.ClientID),
		Username: s(r.Username), Device: s(r.DeviceID), Reason: r.Error, Payload: r.Raw, ReceivedAt: r.RejectedAt}
	if r.ReceivedAt != nil {
		d.ReceivedAt = *r.ReceivedAt
	}
	return d
}

// selectRejected reads rows of readings_rejected; the caller appends the
// WHERE clause on r. refused_as is the row that this row's replay became if
// the bridge refused it again: the row with replay_of naming this one and the
// replay's entry id.
const selectRejected = `SELECT r.id, r.stream, r.entry_id, r.version, r.raw, r.error, r.rejected_at,
	r.replayed_at, r.replayed_stream, r.replayed_entry, r.replay_of,
	(SELECT min(c.id) FROM readings_rejected c
	 WHERE c.replay_of = r.id AND c.stream = r.replayed_stream AND c.entry_id = r.replayed_entry),
	r.source, r.edge_kind, r.topic, r.client_id, r.username, r.device_id, r.received_at
FROM readings_rejected r
`

func scanRejected(rows pgx.Rows) ([]rejectedRow, error) {
	var out []rejectedRow
	for rows.Next() {
		var r rejectedRow
		if err := rows.Scan(&r.ID, &r.Stream, &r.EntryID, &r.Version, &r.Raw, &r.Error, &r.RejectedAt,
			&r.ReplayedAt, &r.ReplayedStream, &r.ReplayedEntry, &r.ReplayOf, &r.RefusedAs,
			&r.Source, &r.EdgeKind, &r.Topic, &r.ClientID, &r.Username, &r.DeviceID, &r.ReceivedAt); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// queryRejected runs selectRejected with where and says what to do when the
// schema predates replays.
func queryRejected(ctx context.Context, pg *pgxpool.Pool, where string, args ...any) ([]rejectedRow, error) {
	rows, err := pg.Query(ctx, selectRejected+where, args...)
	if err != nil {
		return nil, schemaHint(fmt.Errorf("read readings_rejected: %w", err))
	}
	out, err := scanRejected(rows)
	if err != nil {
		return nil, schemaHint(fmt.Errorf("read readings_rejected: %w", err))
	}
	return out, nil
}

// schemaHint adds what to do to an error of a database whose schema is older
// than this command (42703 undefined column, 42P01 undefined table).
func schemaHint(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && (pe.Code == "42703" || pe.Code == "42P01") {
		return fmt.Errorf("%w; the database's schema is older than this firehose: run `firehose migrate` with the same --postgres first", err)
	}
	return err
}

// streamPrefix is how the stream keys of the deployment begin: rows of other
// deployments sharing the database are not this command's.
func (c *rejectedConfig) streamPrefix() string {
	k := c.conn.Streams.Key(0)
	return k[:strings.LastIndexByte(k, '{')]
}

func (r *rejectedRow) status() string {
	switch {
	case r.ReplayedAt == nil:
		return "pending"
	case r.RefusedAs != nil:
		return "refused_again"
	}
	return "replayed"
}

// decoded is the row's entry decoded, or why it does not decode.
func (r *rejectedRow) decoded() (ingest.Reading, error) {
	v := ""
	if r.Version != nil {
		v = *r.Version
	}
	return ingest.Decode(v, string(r.Raw))
}

func listRejected(ctx context.Context, pg *pgxpool.Pool, cfg *rejectedConfig, stdout io.Writer) error {
	var since *time.Time
	if !cfg.since.IsZero() {
		since = &cfg.since
	}
	var limit *int
	if cfg.Limit > 0 {
		limit = &cfg.Limit
	}
	rows, err := queryRejected(ctx, pg, `WHERE starts_with(r.stream, $1) AND ($2::timestamptz IS NULL OR r.rejected_at >= $2)
	AND ($3 OR r.replayed_at IS NULL) ORDER BY r.id LIMIT $4`, cfg.streamPrefix(), since, cfg.Replayed, limit)
	if err != nil {
		return err
	}
	if cfg.JSON {
		enc := json.NewEncoder(stdout)
		for i := range rows {
			if err := enc.Encode(rowJSON(&rows[i])); err != nil {
				return fmt.Errorf("write row %d: %w", rows[i].ID, err)
			}
		}
		return nil
	}
	if len(rows) == 0 {
		what := "no rejected entries waiting"
		if cfg.Replayed {
			what = "no rejected entries"
		}
		var others int64
		if err := pg.QueryRow(ctx, "SELECT count(*) FROM readings_rejected WHERE NOT starts_with(stream, $1)", cfg.streamPrefix()).Scan(&others); err != nil {
			return fmt.Errorf("count rows of other deployments: %w", err)
		}
		fmt.Fprintf(stdout, "%s in deployment %q\n", what, cfg.conn.Streams.Prefix)
		if others > 0 {
			fmt.Fprintf(stdout, "(%d rows belong to streams of other prefixes: give their --redis-prefix to see them)\n", others)
		}
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tREJECTED AT\tSTREAM\tENTRY\tSTATUS\tERROR\tENTRY HOLDS")
	for i := range rows {
		r := &rows[i]
		status := r.status()
		switch {
		case r.RefusedAs != nil:
			status = fmt.Sprintf("refused again: #%d", *r.RefusedAs)
		case r.ReplayOf != nil:
			status += fmt.Sprintf(" (replay of #%d)", *r.ReplayOf)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.RejectedAt.UTC().Format("2006-01-02 15:04:05Z"),
			printable(r.Stream, 40), printable(r.EntryID, 24), status, printable(r.Error, 60), preview(r))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	if cfg.Limit > 0 && len(rows) == cfg.Limit {
		fmt.Fprintf(stdout, "(the first %d rows; more with --limit 0, or narrow with --since)\n", cfg.Limit)
	}
	return nil
}

// preview is a short line of what the row's entry holds.
func preview(r *rejectedRow) string {
	if r.edge() {
		d := r.deadLetter()
		return printable(fmt.Sprintf("edge %s message on %s from client %q (%d bytes)", d.Kind, d.Topic, d.ClientID, len(d.Payload)), 80)
	}
	rd, err := r.decoded()
	if err != nil {
		return "(does not decode) " + printable(string(r.Raw), 40)
	}
	s := fmt.Sprintf("%s reading=%s ts=%s", rd.DeviceID, strconv.FormatFloat(rd.Value, 'g', -1, 64), rd.Time.Format(time.RFC3339Nano))
	if rd.Payload != nil {
		s += " " + string(rd.Payload)
	}
	return printable(s, 80)
}

// printable makes s safe for one table cell: invalid UTF-8, control and other
// unprintable characters are escaped, and it is cut after max characters.
func printable(s string, max int) string {
	var b strings.Builder
	n := 0
	for i := 0; i < len(s); {
		if n == max {
			b.WriteString("…")
			break
		}
		c, w := utf8.DecodeRuneInString(s[i:])
		switch {
		case c == utf8.RuneError && w == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case !unicode.IsPrint(c):
			q := strconv.QuoteRune(c)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteRune(c)
		}
		i += w
		n++
	}
	return b.String()
}

// rejectedJSON is a row as `rejected list --json` prints it.
type rejectedJSON struct {
	ID             int64        `json:"id"`
	Stream         string       `json:"stream"`
	EntryID        string       `json:"entry_id"`
	Version        *string      `json:"version"`
	RejectedAt     time.Time    `json:"rejected_at"`
	Error          string       `json:"error"`
	Status         string       `json:"status"` // pending, replayed, refused_again
	Raw            []byte       `json:"raw"`    // base64
	Reading        *readingJSON `json:"reading,omitempty"`
	DecodeError    string       `json:"decode_error,omitempty"`
	ReplayedAt     *time.Time   `json:"replayed_at"`
	ReplayedStream *string      `json:"replayed_stream"`
	ReplayedEntry  *string      `json:"replayed_entry"`
	ReplayOf       *int64       `json:"replay_of"`
	RefusedAgainAs *int64       `json:"refused_again_as"`
	// Source is "bridge" (an entry the bridge could not write) or "edge"
	// (an edge dead letter, whose message the fields below describe; Raw
	// is its payload).
	Source     string     `json:"source"`
	EdgeKind   *string    `json:"edge_kind,omitempty"`
	Topic      *string    `json:"topic,omitempty"`
	ClientID   *string    `json:"client_id,omitempty"`
	Username   *string    `json:"username,omitempty"`
	DeviceID   *string    `json:"device_id,omitempty"`
	ReceivedAt *time.Time `json:"received_at,omitempty"`
}

// readingJSON is a decoded entry. Reading is a number, or a string ("NaN",
// "+Inf") for what JSON cannot hold; Payload is the extra fields when they
// are JSON, PayloadText when they are not.
type readingJSON struct {
	DeviceID    string          `json:"device_id"`
	Reading     any             `json:"reading"`
	TS          time.Time       `json:"ts"`
	ReceivedAt  time.Time       `json:"received_at"`
	Payload     json.RawMessage `json:"payload,omitempty"`
	PayloadText string          `json:"payload_text,omitempty"`
}

func rowJSON(r *rejectedRow) rejectedJSON {
	j := rejectedJSON{ID: r.ID, Stream: r.Stream, EntryID: r.EntryID, Version: r.Version, RejectedAt: r.RejectedAt,
		Error: r.Error, Status: r.status(), Raw: r.Raw, ReplayedAt: r.ReplayedAt, ReplayedStream: r.ReplayedStream,
		ReplayedEntry: r.ReplayedEntry, ReplayOf: r.ReplayOf, RefusedAgainAs: r.RefusedAs, Source: r.Source,
		EdgeKind: r.EdgeKind, Topic: r.Topic, ClientID: r.ClientID, Username: r.Username, DeviceID: r.DeviceID, ReceivedAt: r.ReceivedAt}
	if r.edge() {
		return j
	}
	rd, err := r.decoded()
	if err != nil {
		j.DecodeError = err.Error()
		return j
	}
	rj := &readingJSON{DeviceID: rd.DeviceID, Reading: rd.Value, TS: rd.Time, ReceivedAt: rd.ReceivedAt}
	if math.IsNaN(rd.Value) || math.IsInf(rd.Value, 0) {
		rj.Reading = strconv.FormatFloat(rd.Value, 'g', -1, 64)
	}
	if rd.Payload != nil {
		if json.Valid(rd.Payload) {
			rj.Payload = rd.Payload
		} else {
			rj.PayloadText = strings.ToValidUTF8(string(rd.Payload), "\uFFFD")
		}
	}
	j.Reading = rj
	return j
}

// replayJob is one row to replay and the readings it sends: one, or those
// an edge dead letter resolved to.
type replayJob struct {
	row      int64
	readings []ingest.Reading
}

// replayTally is what a replay run did.
type replayTally struct {
	sent    []int64          // rows whose replay entry Redis stored, in order
	entries map[int64]string // row -> "stream entry" of the replay this run sent
	skipped int              // rows that need a repair (--all)
}

func replayRejected(ctx context.Context, pg *pgxpool.Pool, rdb redis.UniversalClient, cfg *rejectedConfig, stdout, stderr io.Writer) error {
	if err := cfg.conn.Streams.Load(ctx, rdb); err != nil {
		return err
	}
	if err := checkDeployment(ctx, pg, rdb, cfg.conn.Streams); err != nil {
		return err
	}
	t := &replayTally{entries: map[int64]string{}}
	// Edge dead letters resolve as the broker would now: Sparkplug B
	// against the edge nodes' state the brokers keep beside the streams.
	res := broker.NewResolver(stream.NewSparkplugStore(rdb, cfg.conn.Streams.Prefix+":spb:"), cfg.conn.MQTT.Rules, cfg.Limits)
	var err error
	if cfg.All {
		err = replayAll(ctx, pg, rdb, cfg, res, t, stderr)
	} else {
		err = replayIDs(ctx, pg, rdb, cfg, res, t)
	}
	if err != nil {
		return err
	}
	if len(t.sent) == 0 {
		fmt.Fprintf(stdout, "nothing to replay")
		if t.skipped > 0 {
			fmt.Fprintf(stdout, ": %d rows need a repair (above)", t.skipped)
		}
		fmt.Fprintln(stdout)
		if t.skipped > 0 {
			return fmt.Errorf("%d rows not replayed", t.skipped)
		}
		return nil
	}
	fmt.Fprintf(stdout, "sent %d replays\n", len(t.sent))
	if cfg.Wait == 0 {
		fmt.Fprintln(stdout, "not waiting (--wait 0): `firehose rejected list --replayed` shows how they end")
		return skippedErr(t)
	}
	return waitReplayed(ctx, pg, cfg, t, stdout, stderr)
}

func skippedErr(t *replayTally) error {
	if t.skipped > 0 {
		return fmt.Errorf("%d rows not replayed: they need a repair (above)", t.skipped)
	}
	return nil
}

// replayIDs replays the rows of --id, all or none: if any of them cannot be
// replayed (no such row, another deployment's, replayed already, needs a
// repair) it says why for each and sends nothing.
func replayIDs(ctx context.Context, pg *pgxpool.Pool, rdb redis.UniversalClient, cfg *rejectedConfig, res *broker.Resolver, t *replayTally) error {
	rows, err := queryRejected(ctx, pg, "WHERE r.id = ANY($1) ORDER BY r.id", []int64(cfg.IDs))
	if err != nil {
		return err
	}
	byID := map[int64]*rejectedRow{}
	for i := range rows {
		byID[rows[i].ID] = &rows[i]
	}
	var jobs []replayJob
	var problems []string
	seen := map[int64]bool{}
	for _, id := range cfg.IDs {
		if seen[id] {
			continue
		}
		seen[id] = true
		r, ok := byID[id]
		if !ok {
			problems = append(problems, fmt.Sprintf("row %d: readings_rejected has no such row (see firehose rejected list)", id))
			continue
		}
		if !strings.HasPrefix(r.Stream, cfg.streamPrefix()) {
			problems = append(problems, fmt.Sprintf("row %d: it was rejected from stream %s, not from deployment %q: give its --redis-prefix",
				id, printable(r.Stream, 80), cfg.conn.Streams.Prefix))
			continue
		}
		var repair []byte
		if cfg.Reading != "" {
			repair = []byte(cfg.Reading)
		}
		rs, err := planReplay(ctx, r, repair, cfg.Limits, res)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		jobs = append(jobs, replayJob{row: id, readings: rs})
	}
	switch {
	case len(problems) == 1 && len(seen) == 1:
		return errors.New(problems[0])
	case len(problems) > 0:
		return fmt.Errorf("nothing replayed: %s", strings.Join(problems, "; "))
	}
	return sendReplays(ctx, rdb, cfg.conn.Streams, jobs, t)
}

// replayAll replays every row of the deployment not yet replayed (rejected
// since --since), a page at a time; rows that need a repair are reported and
// skipped.
func replayAll(ctx context.Context, pg *pgxpool.Pool, rdb redis.UniversalClient, cfg *rejectedConfig, res *broker.Resolver, t *replayTally, stderr io.Writer) error {
	var since *time.Time
	if !cfg.since.IsZero() {
		since = &cfg.since
	}
	const where = `WHERE starts_with(r.stream, $1) AND r.replayed_at IS NULL AND ($2::timestamptz IS NULL OR r.rejected_at >= $2)`
	var total int64
	if err := pg.QueryRow(ctx, "SELECT count(*) FROM readings_rejected r "+where, cfg.streamPrefix(), since).Scan(&total); err != nil {
		return schemaHint(fmt.Errorf("count rows to replay: %w", err))
	}
	var after int64
	for done := 0; ; {
		rows, err := queryRejected(ctx, pg, where+" AND r.id > $3 ORDER BY r.id LIMIT $4", cfg.streamPrefix(), since, after, replayBatch)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			return nil
		}
		jobs := make([]replayJob, 0, len(rows))
		for i := range rows {
			rs, err := planReplay(ctx, &rows[i], nil, cfg.Limits, res)
			if err != nil {
				fmt.Fprintf(stderr, "skipped %s\n", err)
				t.skipped++
				continue
			}
			jobs = append(jobs, replayJob{row: rows[i].ID, readings: rs})
		}
		if err := sendReplays(ctx, rdb, cfg.conn.Streams, jobs, t); err != nil {
			return err
		}
		after = rows[len(rows)-1].ID
		done += len(rows)
		if total > replayBatch {
			fmt.Fprintf(stderr, "replay: %d of %d rows done (%d sent, %d skipped)\n", done, total, len(t.sent), t.skipped)
		}
	}
}

// planReplay is the readings that replay row r: the row's entry decoded, or
// repair (a JSON object) when given, normalized and validated as an edge
// would; for an edge dead letter without a repair, the readings its message
// resolves to now through the broker's decode path (res). The error says
// why the row cannot be replayed and what to do.
func planReplay(ctx context.Context, r *rejectedRow, repair []byte, lim ingest.Limits, res *broker.Resolver) ([]ingest.Reading, error) {
	if r.edge() && r.ReplayedAt == nil && repair == nil {
		rs, err := res.Resolve(ctx, r.deadLetter())
		if err != nil {
			return nil, fmt.Errorf("row %d: its %s message still makes no readings (%v): replay it once it resolves (a Sparkplug B DATA once its birth is known), or repair it with --id %d --reading '{...}'",
				r.ID, printable(r.deadLetter().Kind, 20), err, r.ID)
		}
		if len(rs) == 0 {
			return nil, fmt.Errorf("row %d: its message resolves to no readings: nothing to replay", r.ID)
		}
		return rs, nil
	}
	rd, err := planReplayReading(r, repair, lim)
	if err != nil {
		return nil, err
	}
	return []ingest.Reading{rd}, nil
}

// planReplayReading is the one reading that replays row r (see planReplay).
func planReplayReading(r *rejectedRow, repair []byte, lim ingest.Limits) (ingest.Reading, error) {
	if r.ReplayedAt != nil {
		msg := fmt.Sprintf("row %d was replayed already, at %s", r.ID, r.ReplayedAt.UTC().Format(time.RFC3339))
		if r.ReplayedStream != nil && r.ReplayedEntry != nil {
			msg += fmt.Sprintf(" (entry %s of %s)", *r.ReplayedEntry, *r.ReplayedStream)
		}
		if r.RefusedAs != nil {
			return ingest.Reading{}, fmt.Errorf("%s, and refused again as row %d: repair and replay row %d instead", msg, *r.RefusedAs, *r.RefusedAs)
		}
		return ingest.Reading{}, fmt.Errorf("%s: a row is replayed at most once", msg)
	}
	orig, derr := r.decoded()
	if r.edge() {
		derr = errors.New("an edge dead letter")
	}
	var rd ingest.Reading
	if repair != nil {
		if err := ingest.ParseObject(repair, &rd); err != nil {
			return ingest.Reading{}, fmt.Errorf("row %d: --reading: %v", r.ID, err)
		}
		// The time of receipt stays the original's; for an entry that does
		// not decode, when it was rejected is the closest record of it.
		rd.ReceivedAt = r.RejectedAt
		switch {
		case r.edge() && r.ReceivedAt != nil:
			rd.ReceivedAt = *r.ReceivedAt
		case derr == nil:
			rd.ReceivedAt = orig.ReceivedAt
		}
	} else {
		if derr != nil {
			return ingest.Reading{}, fmt.Errorf("row %d does not decode (%v): replay it with its repair, --id %d --reading '{\"device_id\":\"...\",\"reading\":...,\"ts\":\"...\"}'",
				r.ID, derr, r.ID)
		}
		rd = orig
	}
	rd.Normalize()
	err := rd.Validate(lim)
	if err == nil && rd.Payload != nil && (!json.Valid(rd.Payload) || rd.Payload[0] != '{') {
		// Validate trusts the edges' parser to have built a JSON object;
		// a decoded entry was built by no parser.
		err = errors.New("payload: the extra fields are not a JSON object")
	}
	if err != nil {
		how := "repair it with --id " + strconv.FormatInt(r.ID, 10) + " --reading '{...}'"
		if repair != nil {
			how = "fix the --reading"
		}
		return ingest.Reading{}, fmt.Errorf("row %d: the edges would refuse this reading (%v): %s", r.ID, err, how)
	}
	return rd, nil
}

// checkDeployment makes sure the replays go to this database's streams: the
// shard count Redis recorded for the prefix is --shards (else a device's
// replay would go to another shard than its readings), and no shard is
// claimed by another database.
func checkDeployment(ctx context.Context, pg *pgxpool.Pool, rdb redis.UniversalClient, streams stream.Streams) error {
	got, err := rdb.HGet(ctx, streams.MetaKey(), "shards").Result()
	switch {
	case errors.Is(err, redis.Nil):
		return fmt.Errorf("redis has no deployment %q (no %s): check --redis-prefix and --redis", streams.Prefix, streams.MetaKey())
	case err != nil:
		return fmt.Errorf("read the shard count from %s: %w", streams.MetaKey(), err)
	case got != strconv.Itoa(streams.Len()):
		return fmt.Errorf("deployment %q has %s shards, and this command was given --shards %d: replays would go to the wrong streams; give --shards %s",
			streams.Prefix, got, streams.Len(), got)
	}
	var id string
	if err := pg.QueryRow(ctx, "SELECT id::text FROM firehose_deployment").Scan(&id); err != nil {
		return schemaHint(fmt.Errorf("read the deployment id of the database: %w", err))
	}
	for shard := range streams.Len() {
		m, err := stream.ReadShardMeta(ctx, rdb, streams, shard)
		if err != nil {
			return err
		}
		if m.Deployment != "" && m.Deployment != id {
			return fmt.Errorf("stream %s belongs to another database (deployment %s; this one is %s): check --postgres and --redis-prefix",
				streams.Key(shard), m.Deployment, id)
		}
	}
	return nil
}

// sendReplays writes the jobs' replay entries to their shard streams in
// pipelined round trips that never retry (a retried pipeline would write
// entries twice; harmless here, but the client is the producer's). On a
// failure it says how far it got: running the command again is safe.
func sendReplays(ctx context.Context, rdb redis.UniversalClient, streams stream.Streams, jobs []replayJob, t *replayTally) error {
	for len(jobs) > 0 {
		batch := jobs[:min(len(jobs), replayBatch)]
		jobs = jobs[len(batch):]
		replays := make([]stream.Replay, len(batch))
		for i := range batch {
			replays[i] = stream.Replay{Row: batch[i].row, Readings: batch[i].readings}
		}
		entries, execErr := stream.WriteReplays(ctx, rdb, streams, replays)
		for i, e := range entries {
			if e != "" {
				t.sent = append(t.sent, batch[i].row)
				t.entries[batch[i].row] = e
			}
		}
		if execErr != nil {
			return fmt.Errorf("write replays to Redis: %w; %d replays were sent before it failed; "+
				"run the command again: a row is replayed once however often it is sent", execErr, len(t.sent))
		}
	}
	return nil
}

// waitReplayed waits up to --wait for the bridge to commit the replays sent,
// prints how they ended, and returns an error unless every one landed.
func waitReplayed(ctx context.Context, pg *pgxpool.Pool, cfg *rejectedConfig, t *replayTally, stdout, stderr io.Writer) error {
	deadline := time.Now().Add(cfg.Wait)
	var lastSay time.Time
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		var n int
		if err := pg.QueryRow(ctx, "SELECT count(*) FROM readings_rejected WHERE id = ANY($1) AND replayed_at IS NOT NULL", t.sent).Scan(&n); err != nil {
			return fmt.Errorf("read how the replays ended: %w", err)
		}
		if n == len(t.sent) || time.Now().After(deadline) {
			break
		}
		if len(t.sent) > replayBatch && time.Since(lastSay) > 2*time.Second {
			fmt.Fprintf(stderr, "replay: %d of %d committed by the bridge\n", n, len(t.sent))
			lastSay = time.Now()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("interrupted while waiting for the bridge: %d of %d replays committed; the others are in the streams and land once", n, len(t.sent))
		case <-tick.C:
		}
	}
	rows, err := queryRejected(ctx, pg, "WHERE r.id = ANY($1) AND r.replayed_at IS NOT NULL ORDER BY r.id", t.sent)
	if err != nil {
		return err
	}
	var landed, others int
	var refused []string
	for i := range rows {
		r := &rows[i]
		if r.RefusedAs != nil {
			refused = append(refused, fmt.Sprintf("row %d as row %d", r.ID, *r.RefusedAs))
			continue
		}
		landed++
		if r.ReplayedStream != nil && r.ReplayedEntry != nil && t.entries[r.ID] != *r.ReplayedStream+" "+*r.ReplayedEntry {
			others++
		}
	}
	msg := fmt.Sprintf("%d landed in readings", landed)
	if others > 0 {
		msg += fmt.Sprintf(" (%d of them by another replay of the same row, sent before or beside this one)", others)
	}
	fmt.Fprintln(stdout, msg)
	var errs []string
	if len(refused) > 0 {
		shown := refused
		if len(shown) > 20 {
			shown = append(shown[:20:20], "…")
		}
		fmt.Fprintf(stdout, "%d refused again by the bridge, each a new row (firehose rejected list shows why): %s\n", len(refused), strings.Join(shown, ", "))
		errs = append(errs, fmt.Sprintf("%d replays refused again", len(refused)))
	}
	if waiting := len(t.sent) - len(rows); waiting > 0 {
		fmt.Fprintf(stdout, "%d not committed within --wait %s (is a bridge running?): they are in the streams and land once when a bridge commits them\n", waiting, cfg.Wait)
		errs = append(errs, fmt.Sprintf("%d replays not yet committed", waiting))
	}
	if t.skipped > 0 {
		errs = append(errs, fmt.Sprintf("%d rows skipped: they need a repair", t.skipped))
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}
