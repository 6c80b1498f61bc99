package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"firehose/deadletters"
)

// DeadLetters is the deployment's dead letters (the rows of
// readings_rejected: entries the bridge rejected and edge dead letters) as
// the console lists, inspects and replays them. cmd/firehose implements it
// over the process's PostgreSQL pool and Redis client with package
// deadletters, as firehose rejected does.
type DeadLetters interface {
	// List reads one page of the deployment's rows, newest first.
	List(ctx context.Context, q DeadLetterQuery) ([]deadletters.Row, error)
	// Get reads the deployment's row id; nil without error when the
	// deployment has no such row.
	Get(ctx context.Context, id int64) (*deadletters.Row, error)
	// Replay sends the rows ids (nil: every row not yet replayed) through
	// the pipeline again, each at most once, as firehose rejected replay
	// does, and waits a while for the bridge to say how they ended. A
	// result with an error says what was sent before it.
	Replay(ctx context.Context, ids []int64) (ReplayResult, error)
}

// DeadLetterQuery selects a page of the list.
type DeadLetterQuery struct {
	Before  int64 // only rows with ids below it; 0: from the newest
	Pending bool  // only rows not yet replayed
	Limit   int   // rows on the page
}

// ReplayResult is what a replay did.
type ReplayResult struct {
	Sent    int      // rows whose replay entries Redis stored
	Skipped []string // rows not replayed, each with why (replay all: they need a repair)
	// Outcome is how the sent replays ended (its Waiting ones were not
	// committed by the bridge within the wait: they land once later).
	Outcome deadletters.Outcome
}

// deadLetterPageSize is how many rows one page of the list shows.
const deadLetterPageSize = 50

// maxReplayIDs bounds the rows one replay form may name (a page holds
// deadLetterPageSize; "replay all pending" names none).
const maxReplayIDs = 1000

// noDeadLetters is what the pages say in a process without PostgreSQL.
const noDeadLetters = "Dead letters are not available in this process: it runs no role that uses PostgreSQL (bridge, httpgw). Open the console of a process that does, or use firehose rejected list."

type deadLettersPage struct {
	Unavailable string
	Pending     bool
	Rows        []letterView
	Older       int64 // the before= of the next page; 0: none
}

// letterView is a row as the list shows it.
type letterView struct {
	*deadletters.Row
	Device, Table, Holds, ShortError, Status string
}

func viewOf(r *deadletters.Row) letterView {
	v := letterView{Row: r, Holds: r.Preview(), ShortError: deadletters.Printable(r.Error, 80), Status: statusText(r)}
	switch {
	case r.Edge():
		if r.DeviceID != nil {
			v.Device = deadletters.Printable(*r.DeviceID, 40)
		}
	default:
		if rd, err := r.Decoded(); err == nil {
			v.Device = deadletters.Printable(rd.DeviceID, 40)
			if rd.Row != nil {
				v.Table = rd.Row.Shape.Table
			}
		}
	}
	return v
}

// statusText is a row's state in words, as firehose rejected list says it.
func statusText(r *deadletters.Row) string {
	switch {
	case r.RefusedAs != nil:
		return fmt.Sprintf("refused again: #%d", *r.RefusedAs)
	case r.ReplayOf != nil:
		return fmt.Sprintf("%s (replay of #%d)", r.Status(), *r.ReplayOf)
	}
	return r.Status()
}

func (c *Console) deadLetters(w http.ResponseWriter, r *http.Request) {
	if !c.authorized(r) {
		c.render(w, http.StatusUnauthorized, "login.html", loginPage{})
		return
	}
	p := deadLettersPage{Pending: r.URL.Query().Get("pending") == "1"}
	if c.letters == nil {
		p.Unavailable = noDeadLetters
		c.render(w, http.StatusOK, "deadletters.html", p)
		return
	}
	var before int64
	if b := r.URL.Query().Get("before"); b != "" {
		var err error
		if before, err = strconv.ParseInt(b, 10, 64); err != nil || before <= 0 {
			http.Error(w, "before: want a row id", http.StatusBadRequest)
			return
		}
	}
	rows, err := c.letters.List(r.Context(), DeadLetterQuery{Before: before, Pending: p.Pending, Limit: deadLetterPageSize})
	if err != nil {
		c.log.Warn("list dead letters", "err", err)
		http.Error(w, "list dead letters: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	for i := range rows {
		p.Rows = append(p.Rows, viewOf(&rows[i]))
	}
	if len(rows) == deadLetterPageSize {
		p.Older = rows[len(rows)-1].ID
	}
	c.render(w, http.StatusOK, "deadletters.html", p)
}

type deadLetterPage struct {
	letterView
	Reading string // the decoded entry as indented JSON; empty when it does not decode
	Decode  string // why it does not decode
	RawText string // the raw entry or payload, printable
	Pending bool
}

// maxRawShown bounds the characters of a raw entry the inspect page shows.
const maxRawShown = 64 << 10

func (c *Console) deadLetter(w http.ResponseWriter, r *http.Request) {
	if !c.authorized(r) {
		c.render(w, http.StatusUnauthorized, "login.html", loginPage{})
		return
	}
	if c.letters == nil {
		c.render(w, http.StatusOK, "deadletters.html", deadLettersPage{Unavailable: noDeadLetters})
		return
	}
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		http.Error(w, "not a dead letter's id", http.StatusNotFound)
		return
	}
	row, err := c.letters.Get(r.Context(), id)
	if err != nil {
		c.log.Warn("read dead letter", "id", id, "err", err)
		http.Error(w, "read dead letter: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	if row == nil {
		http.Error(w, fmt.Sprintf("this deployment has no dead letter %d", id), http.StatusNotFound)
		return
	}
	p := deadLetterPage{letterView: viewOf(row), RawText: deadletters.Printable(string(row.Raw), maxRawShown), Pending: row.ReplayedAt == nil}
	if !row.Edge() {
		j := row.JSON()
		if j.Reading != nil {
			var b strings.Builder
			enc := json.NewEncoder(&b)
			enc.SetEscapeHTML(false) // the template escapes it
			enc.SetIndent("", "  ")
			_ = enc.Encode(j.Reading)
			p.Reading = b.String()
		} else {
			p.Decode = j.DecodeError
		}
	}
	c.render(w, http.StatusOK, "deadletter.html", p)
}

type replayPage struct {
	ReplayResult
	All   bool
	IDs   []int64
	Error string
}

// replay replays the rows the form names (id, repeated) or, with all=1,
// every row not yet replayed. It needs the token and a request of the
// console's own pages (sameOrigin).
func (c *Console) replay(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		http.Error(w, "cross-origin request refused", http.StatusForbidden)
		return
	}
	if !c.authorized(r) {
		http.Error(w, "the console needs --admin-token: log in at /console/", http.StatusUnauthorized)
		return
	}
	if c.letters == nil {
		http.Error(w, noDeadLetters, http.StatusNotFound)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "read the form: "+err.Error(), http.StatusBadRequest)
		return
	}
	p := replayPage{All: r.PostForm.Get("all") == "1"}
	for _, s := range r.PostForm["id"] {
		id, err := strconv.ParseInt(s, 10, 64)
		if err != nil || id <= 0 {
			http.Error(w, fmt.Sprintf("id %q: want a row id", s), http.StatusBadRequest)
			return
		}
		p.IDs = append(p.IDs, id)
	}
	switch {
	case p.All && len(p.IDs) > 0:
		http.Error(w, "name rows (id) or all=1, not both", http.StatusBadRequest)
		return
	case !p.All && len(p.IDs) == 0:
		http.Error(w, "no rows chosen: tick the rows to replay, or replay all pending", http.StatusBadRequest)
		return
	case len(p.IDs) > maxReplayIDs:
		http.Error(w, fmt.Sprintf("%d rows: at most %d at a time", len(p.IDs), maxReplayIDs), http.StatusBadRequest)
		return
	}
	var err error
	p.ReplayResult, err = c.letters.Replay(r.Context(), p.IDs)
	code := http.StatusOK
	if err != nil {
		// What the operator must fix (a row replayed already, one that
		// needs a repair, another deployment's) or a service that failed:
		// either way the page says it, with what was sent before.
		p.Error = err.Error()
		code = http.StatusConflict
		if errors.Is(err, context.Canceled) {
			return
		}
	}
	attrs := []any{"rows", len(p.IDs), "all", p.All, "sent", p.Sent, "landed", p.Outcome.Landed,
		"refused_again", len(p.Outcome.Refused), "waiting", p.Outcome.Waiting, "skipped", len(p.Skipped)}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	c.log.Info("dead letters replayed from the console", attrs...)
	c.render(w, code, "replay.html", p)
}

// registerDeadLetters adds the dead letters' routes to mux.
func (c *Console) registerDeadLetters(mux *http.ServeMux) {
	mux.HandleFunc("GET /console/deadletters", c.deadLetters)
	mux.HandleFunc("GET /console/deadletters/{id}", c.deadLetter)
	mux.HandleFunc("POST /console/deadletters/replay", c.replay)
}
