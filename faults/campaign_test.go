package faults

// The seeded fault campaign (RELIABILITY.md, "The campaign"), in the spirit
// of Jepsen's checkers and TigerBeetle's VOPR: for each seed, one generator
// (campaign_gen_test.go) fixes the operations - a random mix of every ingest
// path - and the fault schedule, counted in operations; clients
// (campaign_clients_test.go) send the operations through a stack whose
// processes and network paths the schedule breaks (campaign_faults_test.go);
// one checker (campaign_check_test.go) judges everything the clients saw
// against everything stored. A seed that breaks an invariant writes its
// plan, the faults as they ran and the violating readings to a file whose
// path the log prints; `make campaign SEED=N` runs that seed again.
//
// Knobs (environment):
//
//	FIREHOSE_CAMPAIGN_SEED=N      run seed N only (a replay)
//	FIREHOSE_CAMPAIGN=long        the long form: CAMPAIGN_SEEDS seeds (default 20), 1,500 ops each
//	CAMPAIGN_SEEDS=N              seeds of the long form
//	FIREHOSE_CAMPAIGN_OPS=N       operations per seed
//	FIREHOSE_CAMPAIGN_CLASSES=... default or all (every class), or a comma list of classes
//	FIREHOSE_CAMPAIGN_FAULTS=...  a comma list of fault kinds, or none (default: all of them)
//	FIREHOSE_CAMPAIGN_OUT=DIR     where failure files go (default $TMPDIR/firehose-campaign)
//	FIREHOSE_CAMPAIGN_TABLE=FILE  append each seed's table row (JSON) to FILE

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"firehose/internal/testenv"
	"firehose/mapping"
	"firehose/partition"
	"firehose/stream"
	"firehose/typed"
)

// cWorkers is how many clients' operations run at once.
const cWorkers = 4

// TestCampaign runs the campaign: a few fixed seeds of a few hundred
// operations in the short form (make test), many longer seeds in the long
// form (make campaign), one seed with FIREHOSE_CAMPAIGN_SEED.
func TestCampaign(t *testing.T) {
	skipShort(t)
	s, seeds := campaignSettings(t)
	pg := StartPGCluster(t)
	var certs *cIdentCerts
	if slices.Contains(s.Classes, clsIdentity) {
		certs = newIdentCerts(t) // one PKI for every seed: openssl takes ~0.5 s for it
	}
	var rows []cTableRow
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			rows = append(rows, runSeed(t, pg, certs, seed, s))
		})
	}
	t.Logf("campaign (classes %s):\n%s", strings.Join(s.Classes, ","), cTable(rows))
}

// campaignSettings reads the knobs.
func campaignSettings(t *testing.T) (cSettings, []uint64) {
	t.Helper()
	long := os.Getenv("FIREHOSE_CAMPAIGN") == "long"
	s := cSettings{Ops: 300, Long: long, Faults: campaignFaultKinds, Classes: campaignDefaultClasses}
	// The short form's seeds: each meets every fault kind of its stack once
	// (a run of 300 ops gets one cycle, see schedule), so between them every
	// kind but the cluster failover: 12 and 18 on AOF (redis-kill), 28 on
	// RDB (redis-restore); --dedup natural, off and id; --mqtt-auth off, on,
	// on; the retention bound in all three; the subscriber at QoS 2 in all
	// three, devices publishing to Mosquitto at QoS 1 and 2, so its messages
	// arrive at both (--subscribe-qos 1 only in other seeds, e.g. 3, 6, 11).
	// See RELIABILITY.md.
	seeds := []uint64{12, 18, 28}
	if long {
		s.Ops = 1500
		n := 20
		if v, err := strconv.Atoi(os.Getenv("CAMPAIGN_SEEDS")); err == nil && v > 0 {
			n = v
		}
		seeds = seeds[:0]
		for i := range n {
			seeds = append(seeds, uint64(i+1))
		}
	}
	if v := os.Getenv("FIREHOSE_CAMPAIGN_SEED"); v != "" {
		seed, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("FIREHOSE_CAMPAIGN_SEED=%q: %v", v, err)
		}
		seeds = []uint64{seed}
	}
	if v, err := strconv.Atoi(os.Getenv("FIREHOSE_CAMPAIGN_OPS")); err == nil && v > 0 {
		s.Ops = v
	}
	switch v := os.Getenv("FIREHOSE_CAMPAIGN_CLASSES"); {
	case v == "" || v == "default":
	case v == "all":
		s.Classes = campaignAllClasses
	default:
		var cs []string
		if strings.HasPrefix(v, "+") {
			cs = slices.Clone(campaignDefaultClasses)
		}
		for _, c := range strings.Split(strings.TrimPrefix(v, "+"), ",") {
			c = strings.TrimSpace(strings.TrimPrefix(c, "+"))
			if !slices.Contains(campaignAllClasses, c) {
				t.Fatalf("FIREHOSE_CAMPAIGN_CLASSES: unknown class %q (known: %s)", c, strings.Join(campaignAllClasses, ", "))
			}
			if !slices.Contains(cs, c) {
				cs = append(cs, c)
			}
		}
		s.Classes = cs
	}
	if _, err := testenv.MosquittoPath(); err != nil && slices.Contains(s.Classes, clsSubscribed) {
		// Without it the subscribed class would skip every seed.
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v (scripts/testtools.sh ensure installs it): the subscribed class needs it", err)
		}
		t.Logf("WARNING: %v (scripts/testtools.sh ensure installs it): the campaign runs without the subscribed class, so its seeds draw other plans", err)
		s.Classes = slices.DeleteFunc(slices.Clone(s.Classes), func(c string) bool { return c == clsSubscribed })
	}
	if _, err := exec.LookPath("openssl"); err != nil && slices.Contains(s.Classes, clsIdentity) {
		// The identity class makes its certificates with it (testcert.NewPKI).
		if os.Getenv("CI") == "true" {
			t.Fatalf("openssl not installed (%v): the identity class needs it", err)
		}
		t.Logf("WARNING: openssl not installed (%v): the campaign runs without the identity class, so its seeds draw other plans", err)
		s.Classes = slices.DeleteFunc(slices.Clone(s.Classes), func(c string) bool { return c == clsIdentity })
	}
	if v := os.Getenv("FIREHOSE_CAMPAIGN_FAULTS"); v != "" {
		s.Faults = nil
		for _, f := range strings.Split(v, ",") {
			if f == "none" {
				continue
			}
			f = strings.TrimSpace(f)
			if !slices.Contains(campaignFaultKinds, f) {
				t.Fatalf("FIREHOSE_CAMPAIGN_FAULTS: unknown fault %q (known: %s)", f, strings.Join(campaignFaultKinds, ", "))
			}
			s.Faults = append(s.Faults, f)
		}
	}
	return s, seeds
}

// cTableRow is one seed's line of the campaign table.
type cTableRow struct {
	Seed       uint64         `json:"seed"`
	Ops        int            `json:"ops"`
	Acked      int            `json:"acked"`
	Unknown    int            `json:"unknown"`
	Refused    int            `json:"refused"`
	Rows       int            `json:"rows"`
	SubAcked   int            `json:"sub_acked"`   // subscribed: messages Mosquitto acknowledged
	SubRows    int            `json:"sub_rows"`    // subscribed: rows judged
	TypedAcked int            `json:"typed_acked"` // typed: messages acknowledged
	TypedRows  int            `json:"typed_rows"`  // typed: rows of the typed table judged
	IdentAcked int            `json:"ident_acked"` // identity: messages the identity edge acknowledged (probes aside)
	IdentRows  int            `json:"ident_rows"`  // identity: rows of its devices judged
	Settings   string         `json:"settings"`
	Faults     map[string]int `json:"faults"`
	Violations int            `json:"violations"`
	Summary    string         `json:"summary,omitempty"`
	Seconds    float64        `json:"seconds"`
}

func cTable(rows []cTableRow) string {
	var b strings.Builder
	b.WriteString("| seed | settings | ops | acked | unknown | refused | rows | subscribed acked / rows | typed acked / rows | identity acked / rows | faults injected | violations | s |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		v := strconv.Itoa(r.Violations)
		if r.Summary != "" {
			v += " (" + r.Summary + ")"
		}
		fmt.Fprintf(&b, "| %d | %s | %d | %d | %d | %d | %d | %d / %d | %d / %d | %d / %d | %s | %s | %.0f |\n", r.Seed, r.Settings, r.Ops, r.Acked, r.Unknown, r.Refused, r.Rows, r.SubAcked, r.SubRows,
			r.TypedAcked, r.TypedRows, r.IdentAcked, r.IdentRows, cFaultCounts(r.Faults), v, r.Seconds)
	}
	return b.String()
}

func cFaultCounts(m map[string]int) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	var parts []string
	for _, k := range ks {
		parts = append(parts, fmt.Sprintf("%s×%d", k, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

// runSeed runs one seed: plan, stack, operations with faults, drain, check.
func runSeed(t *testing.T, pg *PGCluster, certs *cIdentCerts, seed uint64, s cSettings) cTableRow {
	start := time.Now()
	plan := generate(seed, start, s)
	var sched []string
	for _, f := range plan.Faults {
		sched = append(sched, fmt.Sprintf("%s at op %d for %d ops", f.Kind, f.At, f.Len))
	}
	settings := fmt.Sprintf("redis %s, dedup %s", plan.Persist, plan.Dedup)
	if plan.Persist == "cluster" {
		settings = "redis cluster (AOF always), min-replicas 1, dedup " + plan.Dedup
	}
	if plan.Auth {
		settings += ", mqtt-auth"
	}
	if plan.Retention {
		settings += ", retention 3d"
	}
	if plan.SubQoS != 0 {
		settings += fmt.Sprintf(", subscriber QoS %d", plan.SubQoS)
	}
	t.Logf("seed %d: %d ops, %s; faults: %s", seed, len(plan.Ops), settings, strings.Join(sched, "; "))

	e := startEnv(t, plan, pg, certs)
	tg := cTargets{HTTP: e.edge.HTTP(), MQTT: e.edge.MQTTAddr, Auth: plan.Auth, Epoch: &e.epoch, Commands: &cInbox{}, Ident: e.identity}
	if e.mosq != nil {
		tg.Upstream = e.mosq.Addr()
	}
	if plan.Auth {
		var devs []string
		for i := range cDevices {
			devs = append(devs, fmt.Sprintf("cd%d", i))
		}
		closeSubs, err := subscribeCommands(tg, devs)
		if err != nil {
			t.Fatalf("subscribers: %v", err)
		}
		defer closeSubs()
		closeObs, err := subscribeObserver(tg)
		if err != nil {
			t.Fatalf("observer: %v", err)
		}
		defer closeObs()
	}

	answers := make([]cAnswer, len(plan.Ops))
	var inflight, workers sync.WaitGroup
	chans := make([]chan *cOp, cWorkers)
	for i := range chans {
		chans[i] = make(chan *cOp, 1)
		w := newWorker(tg)
		workers.Go(func() {
			defer w.close()
			for op := range chans[i] {
				answers[op.ID] = w.run(op)
				inflight.Done()
			}
		})
	}
	steps := e.steps()
	next := 0
	for i, op := range plan.Ops {
		for next < len(steps) && steps[next].before <= i {
			if steps[next].quiesce {
				inflight.Wait()
			}
			e.apply(steps[next])
			next++
		}
		h := fnv.New32a()
		h.Write([]byte(op.Client))
		inflight.Add(1)
		chans[h.Sum32()%cWorkers] <- op
	}
	inflight.Wait()
	for ; next < len(steps); next++ {
		e.apply(steps[next])
	}
	for _, c := range chans {
		close(c)
	}
	workers.Wait()

	// Settle: the subscriber takes everything Mosquitto holds for it (its
	// fence lands) and stops; the edge flushes what it holds (QoS 0
	// included) on SIGTERM; the bridge commits until every stream's
	// checkpoint is its last id.
	st := cStore{RSS: map[string]int64{"edge": RSS(e.edge.Proc.Pid()), "bridge": RSS(e.bridge.Proc.Pid())}}
	if e.ident != nil {
		st.RSS["identity edge"] = RSS(e.ident.Proc.Pid())
	}
	exited := e.revive()
	if e.sub != nil {
		if err := e.subFence(); err != nil {
			e.Problems = append(e.Problems, cViolation{Invariant: "the subscriber takes what Mosquitto holds", Detail: "after the last op: " + err.Error()})
		}
		st.RSS["subscriber"] = RSS(e.sub.Proc.Pid())
		e.subCount()
		st.SubResent = int(e.subDup + e.subRetried)
		e.sub.Proc.Signal(syscall.SIGTERM)
		if _, ok := e.sub.Proc.Wait(time.Minute); !ok {
			t.Errorf("the subscriber did not exit within a minute of SIGTERM")
		}
	}
	for _, edge := range e.edges() {
		edge.Proc.Signal(syscall.SIGTERM)
	}
	for _, edge := range e.edges() {
		if _, ok := edge.Proc.Wait(time.Minute); !ok {
			t.Errorf("an edge (%s) did not exit within a minute of SIGTERM", edge.HTTP())
		}
	}
	cWaitDrained(t, e)
	ctx := context.Background()
	if plan.Retention {
		// The next maintenance pass, run here so the check sees its effect.
		if err := cMaintain(ctx, e.dbURL); err != nil {
			t.Fatalf("maintenance pass: %v", err)
		}
	}
	var err error
	if st.Rows, err = cReadRows(ctx, e.dbURL); err != nil {
		t.Fatalf("read readings: %v", err)
	}
	typedRows, err := cReadTyped(ctx, e.dbURL)
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &pe) && pe.Code == "42P01": // undefined_table
		// Its rows were dead letters of a missing table: each acknowledged
		// one is missing, and the check says so.
		e.Problems = append(e.Problems, cViolation{Invariant: "the bridge creates the typed table", Detail: err.Error()})
	case err != nil:
		t.Fatalf("read the typed table %s: %v", cTypedTable, err)
	}
	st.Rows = append(st.Rows, typedRows...)
	st.DeadLetters = cEdgeDeadLetters(ctx, e.dbURL)
	st.Commands = tg.Commands.Got
	if st.RedisMemory, err = e.usedMemory(ctx); err != nil {
		t.Fatalf("INFO memory: %v", err)
	}
	sum := check(plan, answers, e.Windows, st)
	for _, x := range exited {
		sum.Violations = append(sum.Violations, cViolation{Invariant: "processes survive the faults", Detail: "exited by itself: " + x})
	}
	sum.Violations = append(sum.Violations, e.Problems...)

	row := cTableRow{Seed: seed, Ops: len(plan.Ops), Acked: sum.Acked, Unknown: sum.Unknown, Refused: sum.Refused, Rows: sum.Rows, SubAcked: sum.SubAcked, SubRows: sum.SubRows,
		TypedAcked: sum.TypedAcked, TypedRows: sum.TypedRows, IdentAcked: sum.IdentAcked, IdentRows: sum.IdentRows, Settings: settings, Faults: e.Injected, Violations: len(sum.Violations), Seconds: time.Since(start).Seconds()}
	subLine := ""
	if e.sub != nil {
		subLine = fmt.Sprintf("; subscribed: %d messages acked by Mosquitto, %d rows, %d stored again at QoS 1, %d of them under --dedup (allowed %d: Mosquitto resent %.0f, the subscriber retried %.0f stores), RSS subscriber %s",
			sum.SubAcked, sum.SubRows, sum.SubExtra, sum.SubExtraDedup, st.SubResent, e.subDup, e.subRetried, outMiB(st.RSS["subscriber"]))
		if len(sum.SubAgain) > 0 {
			t.Logf("seed %d: stored again through the subscriber at QoS 1: %s", seed, strings.Join(sum.SubAgain, ", "))
		}
	}
	identLine := ""
	if e.ident != nil {
		identLine = fmt.Sprintf("; identity: %d messages acked by the identity edge (%d of them HTTPS requests with a client certificate), %d rows of its devices, %d probes (%d refused, the others unknown), while PostgreSQL was down (%d pg-stops) %s, RSS identity edge %s",
			sum.IdentAcked, sum.IdentCertHTTP, sum.IdentRows, sum.IdentProbes, sum.IdentProbesRefused, e.identDown.Stops, e.identDown, outMiB(st.RSS["identity edge"]))
	}
	t.Logf("seed %d: %d ops, %d messages acked, %d unknown, %d refused; %d rows (%d readings found as dead letters; typed: %d messages acked, %d rows of %s, %d messages breaking a type, %d of them acked as edge dead letters); Redis %s, RSS edge %s bridge %s; faults injected: %s%s%s; %d violations",
		seed, len(plan.Ops), sum.Acked, sum.Unknown, sum.Refused, sum.Rows, sum.DeadLettered, sum.TypedAcked, sum.TypedRows, cTypedTable, sum.TypedBad, sum.TypedBadDead, outMiB(st.RedisMemory), outMiB(st.RSS["edge"]), outMiB(st.RSS["bridge"]),
		cFaultCounts(e.Injected), subLine, identLine, len(sum.Violations))
	if len(sum.Violations) > 0 {
		row.Summary = cViolationSummary(sum.Violations)
		path := cWriteFailure(t, plan, s, e, answers, sum)
		t.Errorf("seed %d: %d violations (%s); seed, schedule and violating readings in %s; replay: make campaign SEED=%d CAMPAIGN_OPS=%d CAMPAIGN_CLASSES=%s CAMPAIGN_FAULTS=%s",
			seed, len(sum.Violations), row.Summary, path, seed, s.Ops, strings.Join(s.Classes, ","), cJoinOr(s.Faults, "none"))
	}
	if f := os.Getenv("FIREHOSE_CAMPAIGN_TABLE"); f != "" {
		line, _ := json.Marshal(row)
		if fh, err := os.OpenFile(f, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
			fh.Write(append(line, '\n'))
			fh.Close()
		}
	}
	return row
}

func cJoinOr(xs []string, none string) string {
	if len(xs) == 0 {
		return none
	}
	return strings.Join(xs, ",")
}

// cViolationSummary counts violations by invariant.
func cViolationSummary(vs []cViolation) string {
	n := map[string]int{}
	for _, v := range vs {
		n[v.Invariant]++
	}
	return cFaultCounts(n)
}

// cWaitDrained waits until every shard stream's checkpoint has reached its
// last id: every entry the edge wrote is committed (or rejected).
func cWaitDrained(t *testing.T, e *cEnv) {
	t.Helper()
	keys := e.streams().Keys()
	pending := ""
	testenv.Eventually(t, 5*time.Minute, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cps := map[string]string{}
		err := cRetry(ctx, func(ctx context.Context) error {
			conn, err := pgx.Connect(ctx, e.dbURL)
			if err != nil {
				return err
			}
			defer conn.Close(context.Background())
			rows, err := conn.Query(ctx, "SELECT stream, last_id FROM bridge_checkpoints")
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var s, id string
				if err := rows.Scan(&s, &id); err != nil {
					return err
				}
				cps[s] = id
			}
			return rows.Err()
		})
		if err != nil {
			pending = err.Error()
			return false
		}
		for _, key := range keys {
			info, err := e.uni.XInfoStream(ctx, key).Result()
			if err != nil {
				if strings.Contains(err.Error(), "no such key") {
					continue
				}
				pending = err.Error()
				return false
			}
			last, err := stream.ParseStreamID(info.LastGeneratedID)
			if err != nil || last == (stream.StreamID{}) {
				continue
			}
			cp, err := stream.ParseStreamID(cps[key])
			if cps[key] == "" || err != nil || cp.Less(last) {
				pending = fmt.Sprintf("%s: checkpoint %q, last entry %s", key, cps[key], last)
				return false
			}
		}
		return true
	}, "the bridge did not commit everything the edge wrote: %s", edgeLazy(func() string { return pending }))
}

// cMaintain runs one partition maintenance pass with the retention class's
// --retention, over readings and the rules' typed table, as serve's bridge
// runs it.
func cMaintain(ctx context.Context, dbURL string) error {
	tables, err := cRulesTables()
	if err != nil {
		return err
	}
	return cRetry(ctx, func(ctx context.Context) error {
		pool, err := pgxpool.New(ctx, dbURL)
		if err != nil {
			return err
		}
		defer pool.Close()
		m := partition.New(partition.Config{Retention: cRetention, Tables: tables}, pool, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
		return m.Maintain(ctx)
	})
}

// cRulesTables are the typed tables of cRulesFile, as serve reads them.
func cRulesTables() ([]typed.Table, error) {
	var doc map[string]yaml.Node
	if err := yaml.Unmarshal([]byte(cRulesFile), &doc); err != nil {
		return nil, fmt.Errorf("campaign rules: %w", err)
	}
	rules := doc["rules"]
	m, err := mapping.DecodeYAML(&rules)
	if err != nil {
		return nil, fmt.Errorf("campaign rules: %w", err)
	}
	return m.Tables(), nil
}

// cWriteFailure writes a failing seed's file and returns its path.
func cWriteFailure(t *testing.T, plan *cPlan, s cSettings, e *cEnv, answers []cAnswer, sum cSummary) string {
	t.Helper()
	dir := os.Getenv("FIREHOSE_CAMPAIGN_OUT")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "firehose-campaign")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Logf("failure file: %v", err)
		return ""
	}
	involved := map[int]bool{}
	for _, v := range sum.Violations {
		for _, a := range v.Attempts {
			involved[a.Op] = true
		}
	}
	var ops []*cOp
	var ans []cAnswer
	for _, op := range plan.Ops {
		if involved[op.ID] {
			ops = append(ops, op)
			ans = append(ans, answers[op.ID])
		}
	}
	vs := sum.Violations
	if len(vs) > 200 {
		vs = vs[:200]
	}
	doc := map[string]any{
		"seed": plan.Seed, "replay": fmt.Sprintf("make campaign SEED=%d CAMPAIGN_OPS=%d CAMPAIGN_CLASSES=%s CAMPAIGN_FAULTS=%s", plan.Seed, s.Ops, strings.Join(s.Classes, ","), cJoinOr(s.Faults, "none")),
		"plan": plan, "ops": len(plan.Ops), "fault_kinds": s.Faults, "events": e.Events, "loss_windows": e.Windows,
		"violations_total": len(sum.Violations), "violations": vs, "violating_ops": ops, "their_answers": ans,
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		t.Logf("failure file: %v", err)
		return ""
	}
	path := filepath.Join(dir, fmt.Sprintf("seed-%d.json", plan.Seed))
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Logf("failure file: %v", err)
		return ""
	}
	return path
}
