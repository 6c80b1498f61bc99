package httpgw

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"firehose/ingest"
	"firehose/internal/jsonscan"
	"firehose/mapping"
)

// POST /v1/readings is the native endpoint: one reading object, a JSON array
// of them, or NDJSON, each read once by ingest.ParseObject or ReadObject. A request is all or
// nothing: one bad reading refuses them all, and nothing is stored.

// headerIdempotencyKey is the header of a request's id: with --dedup id a
// request sent again with the same id (after a lost answer) is answered as
// before and its readings are not stored again.
const headerIdempotencyKey = "Idempotency-Key"

// maxDetails caps the invalid readings listed in a 422 answer.
const maxDetails = 100

// v1Detail is one invalid reading in a 422 answer.
type v1Detail struct {
	Index int    `json:"index"`          // 0-based position among the request's readings
	Line  int    `json:"line,omitempty"` // 1-based NDJSON line
	Field string `json:"field"`
	Type  string `json:"type"`
	Msg   string `json:"msg"`
}

var bodyPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func (s *Server) handleV1(w http.ResponseWriter, req *http.Request) int {
	var key *apiKey
	if s.keys != nil {
		var err error
		if key, err = s.authenticate(req); err != nil {
			return s.answerError(w, err, 1)
		}
	}
	certDevice, err := s.certDevice(req)
	if err != nil {
		return s.answerError(w, err, 1)
	}
	authDevice := "" // a certificate is enough: no secret asked of its client
	if certDevice == "" {
		if authDevice, err = s.authDevice(req); err != nil {
			return s.answerError(w, err, 1)
		}
	}
	ndjson, err := mediaType(req.Header.Get("Content-Type"))
	if err != nil {
		return s.answerError(w, err, 1)
	}
	// The readings do not share the body's memory (ParseObject copies), so
	// it goes back to the pool whatever happens.
	bp := bodyPool.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= maxPooledBody {
			bodyPool.Put(bp)
		}
	}()
	body, err := readBody(w, req, s.cfg.MaxBody, (*bp)[:0])
	*bp = body[:0]
	if err != nil {
		return s.answerError(w, err, 1)
	}
	var rs []ingest.Reading
	if rule := ruleOf(req); rule != "" {
		rs, err = s.mapV1(rule, body, ndjson, time.Now())
	} else {
		rs, err = decodeV1(body, ndjson, s.cfg.MaxItems, s.cfg.Limits, time.Now())
	}
	if err != nil {
		return s.answerError(w, err, 1)
	}
	if key != nil {
		for i := range rs {
			if !key.allows(rs[i].DeviceID) {
				return s.answerError(w, forbidden(key, rs[i].DeviceID), len(rs))
			}
		}
	}
	if err := certAllows(certDevice, rs); err != nil {
		return s.answerError(w, err, len(rs))
	}
	if err := deviceAllows(authDevice, rs); err != nil {
		return s.answerError(w, err, len(rs))
	}
	// The request's id names each of its readings (--dedup id), before
	// any msg_id of their own or of a rule.
	if v := req.Header[headerIdempotencyKey]; len(v) > 0 {
		ingest.NameRows(rs, v[0])
	}
	if err := s.p.Add(addContext, rs); err != nil {
		return s.answerError(w, err, len(rs))
	}
	s.m.accepted.Add(float64(len(rs)))
	out := strconv.AppendInt([]byte(`{"accepted":`), int64(len(rs)), 10)
	return writeJSON(w, http.StatusOK, append(out, '}'))
}

// decodeV1 decodes a /v1/readings body: a JSON object, a JSON array of
// objects, or (ndjson) one object per line, blank lines skipped. Each reading
// gets ReceivedAt now, is normalized and validated against lim. Errors are
// *apiError: 400 for malformed JSON (naming the item or line), 413 for more
// than maxItems readings, 422 listing every invalid reading, or none at all.
func decodeV1(body []byte, ndjson bool, maxItems int, lim ingest.Limits, now time.Time) ([]ingest.Reading, error) {
	d := v1Decoder{maxItems: maxItems, lim: lim, now: now}
	var err error
	if ndjson {
		err = d.ndjson(body)
	} else {
		err = d.json(body)
	}
	if err != nil {
		return nil, err
	}
	switch {
	case d.invalid > 0:
		return nil, d.invalidError()
	case d.items == 0:
		return nil, refusal(http.StatusUnprocessableEntity, reasonInvalid, "no readings")
	}
	return d.rs, nil
}

// v1Decoder collects the readings of one request, or what is wrong with them.
type v1Decoder struct {
	maxItems int
	lim      ingest.Limits
	now      time.Time

	items   int // readings seen
	rs      []ingest.Reading
	invalid int
	details []v1Detail
}

// json reads a single object or an array of them, each item once: the
// scanner validates the array as it hands each item to ingest.ReadObject.
func (d *v1Decoder) json(body []byte) error {
	var s jsonscan.Scanner
	s.Reset(body)
	if s.Peek() != '[' {
		if s.Pos() == len(body) {
			return nil
		}
		return d.item(body, 0)
	}
	s.EnterArray()
	// json.Decoder, which read the items before, counted each one's depth
	// from the item, not from the array.
	s.SetMaxDepth(jsonscan.MaxDepth + 1)
	inItem := false // a syntax error met inside an item, not between items
	index := 0      // of the item read, or the next
	for s.NextElement() {
		inItem, index = true, d.items
		if err := d.count(); err != nil {
			if _, _, ok := s.Value(); ok {
				return err
			}
			break // malformed JSON is told first, as when json.Decoder read the item
		}
		var r ingest.Reading
		err := ingest.ReadObject(&s, &r)
		if s.Err() != nil {
			break
		}
		inItem = false
		d.collect(&r, err, d.items-1, 0)
	}
	if se := s.SyntaxError(); se != nil {
		if !inItem {
			index = d.items
		}
		if !inItem && se.Offset == int64(len(body)) && strings.HasPrefix(se.Error(), "unexpected end") {
			return malformed(fmt.Sprintf("malformed JSON after item %d at byte %d: the array is not closed", index, se.Offset), index, 0)
		}
		return malformed(fmt.Sprintf("malformed JSON in item %d at byte %d: %v", index, se.Offset, se), index, 0)
	}
	if !s.End() {
		return malformed(fmt.Sprintf("malformed JSON at byte %d: data after the array", s.Pos()), d.items, 0)
	}
	return nil
}

func (d *v1Decoder) ndjson(body []byte) error {
	for line := 1; len(body) > 0; line++ {
		l := body
		if n := bytes.IndexByte(body, '\n'); n >= 0 {
			l, body = body[:n], body[n+1:]
		} else {
			body = nil
		}
		if l = bytes.TrimSpace(l); len(l) > 0 {
			if err := d.item(l, line); err != nil {
				return err
			}
		}
	}
	return nil
}

// item parses one reading, a single object or an NDJSON line (line is its
// number, or 0). It returns an error only when the whole request must stop
// (malformed JSON, too many readings); invalid readings are collected.
func (d *v1Decoder) item(raw []byte, line int) error {
	if err := d.count(); err != nil {
		return err
	}
	index := d.items - 1
	var r ingest.Reading
	err := ingest.ParseObject(raw, &r)
	if err != nil {
		if msg, bad := malformedObject(err, raw); bad {
			if line > 0 {
				return malformed(fmt.Sprintf("malformed JSON on line %d: %s", line, msg), index, line)
			}
			msg = "malformed JSON: " + msg
			if strings.Contains(msg, "after top-level value") {
				msg += " (for one reading per line send Content-Type: application/x-ndjson)"
			}
			return malformed(msg, index, line)
		}
	}
	d.collect(&r, err, index, line)
	return nil
}

// malformedObject reports whether ParseObject refused raw with err because
// it is not JSON, and in which words.
func malformedObject(err error, raw []byte) (string, bool) {
	var fe *ingest.FieldError
	if !errors.As(err, &fe) {
		return "", false
	}
	return fe.Msg, fe.Type == "json_invalid" || (fe.Field == "body" && fe.Type == "type" && !jsonscan.Valid(raw))
}

// count counts one more reading, or refuses the request when there are too
// many.
func (d *v1Decoder) count() error {
	if d.items == d.maxItems {
		return refusal(http.StatusRequestEntityTooLarge, reasonTooLarge,
			fmt.Sprintf("more than %d readings in one request: split it", d.maxItems))
	}
	d.items++
	return nil
}

// collect keeps reading index (parsed with the error err), normalized and
// validated, or what is wrong with it.
func (d *v1Decoder) collect(r *ingest.Reading, err error, index, line int) {
	if err == nil {
		r.ReceivedAt = d.now
		r.Normalize()
		err = r.Validate(d.lim)
	}
	if err == nil {
		if d.invalid == 0 {
			d.rs = append(d.rs, *r)
		}
		return
	}
	fe := &ingest.FieldError{Field: "body", Type: "invalid", Msg: err.Error()}
	errors.As(err, &fe)
	d.invalid++
	d.rs = nil // all or nothing: no reading of this request will be stored
	if len(d.details) < maxDetails {
		d.details = append(d.details, v1Detail{Index: index, Line: line, Field: fe.Field, Type: fe.Type, Msg: fe.Msg})
	}
}

// malformed is the 400 answer to JSON that does not parse.
func malformed(msg string, index, line int) *apiError {
	extra := strconv.AppendInt([]byte(`,"index":`), int64(index), 10)
	if line > 0 {
		extra = strconv.AppendInt(append(extra, `,"line":`...), int64(line), 10)
	}
	return refusal(http.StatusBadRequest, reasonInvalid, msg, extra...)
}

// invalidError is the 422 answer listing the invalid readings.
func (d *v1Decoder) invalidError() *apiError {
	answer := struct {
		Error   string     `json:"error"`
		Invalid int        `json:"invalid"`
		Details []v1Detail `json:"details"`
		More    int        `json:"more,omitempty"`
	}{"invalid readings", d.invalid, d.details, d.invalid - len(d.details)}
	body, _ := json.Marshal(answer) // plain strings and ints: cannot fail
	return &apiError{code: http.StatusUnprocessableEntity, reason: reasonInvalid, n: d.items, body: body}
}

// mapV1 maps a /v1/readings body by the rule named: one message (a JSON
// object), or with ndjson one message per line; the readings of every
// message are stored together or refused together. A message the rule cannot
// map is 422 naming the rule, the path and (NDJSON) the line; an unknown rule
// 400.
func (s *Server) mapV1(rule string, body []byte, ndjson bool, now time.Time) ([]ingest.Reading, error) {
	mt, ok := s.cfg.Rules.ForEndpoint(epV1, rule)
	if !ok {
		return nil, refusal(http.StatusBadRequest, reasonInvalid, "no mapping rule "+strconv.Quote(rule)+" for "+epV1)
	}
	msgs := [][]byte{body}
	if ndjson {
		msgs = msgs[:0]
		for _, line := range bytes.Split(body, []byte{'\n'}) {
			msgs = append(msgs, line) // blank lines are skipped below, but keep the numbering
		}
	}
	// A reading a message, as most rules make: the slice grows only for
	// more (samples, metrics).
	rs := make([]ingest.Reading, 0, min(len(msgs), s.cfg.MaxItems))
	for i, m := range msgs {
		if ndjson && len(bytes.TrimSpace(m)) == 0 {
			continue
		}
		var err error
		rs, err = mt.AppendMap(rs, m, now, s.cfg.Limits)
		if err != nil {
			var me *mapping.Error
			if !errors.As(err, &me) {
				return nil, err
			}
			extra := appendJSONString([]byte(`,"rule":`), me.Rule)
			extra = appendJSONString(append(extra, `,"path":`...), me.Path)
			if me.Column != "" {
				extra = appendJSONString(append(extra, `,"column":`...), me.Column)
			}
			if ndjson {
				extra = strconv.AppendInt(append(extra, `,"line":`...), int64(i+1), 10)
			}
			return nil, refusal(http.StatusUnprocessableEntity, reasonInvalid, me.Error(), extra...)
		}
		if len(rs) > s.cfg.MaxItems {
			return nil, refusal(http.StatusRequestEntityTooLarge, reasonTooLarge,
				"the request maps to more than "+strconv.Itoa(s.cfg.MaxItems)+" readings")
		}
	}
	if len(rs) == 0 {
		return nil, refusal(http.StatusBadRequest, reasonInvalid, "no message in the body")
	}
	return rs, nil
}

// ruleOf is the mapping rule a request names (?rule=NAME), without parsing a
// query that is not there: the common request pays nothing for rules.
func ruleOf(req *http.Request) string {
	if req.URL.RawQuery == "" {
		return ""
	}
	return req.URL.Query().Get("rule")
}
