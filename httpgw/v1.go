package httpgw

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"firehose/ingest"
)

// POST /v1/readings is the native endpoint: one reading object, a JSON array
// of them, or NDJSON, each parsed by ingest.ParseObject. A request is all or
// nothing: one bad reading refuses them all, and nothing is stored.

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
	rs, err := decodeV1(body, ndjson, s.cfg.MaxItems, s.cfg.Limits, time.Now())
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

func (d *v1Decoder) json(body []byte) error {
	i := skipSpace(body, 0)
	switch {
	case i == len(body):
		return nil
	case body[i] != '[':
		return d.item(body, 0)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if _, err := dec.Token(); err != nil { // '['
		return malformed("malformed JSON: "+err.Error(), 0, 0)
	}
	for dec.More() {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return malformed(fmt.Sprintf("malformed JSON in item %d at byte %d: %v", d.items, dec.InputOffset(), err), d.items, 0)
		}
		if err := d.item(raw, 0); err != nil {
			return err
		}
	}
	if t, err := dec.Token(); err != nil || t != json.Delim(']') {
		return malformed(fmt.Sprintf("malformed JSON after item %d at byte %d: the array is not closed", d.items, dec.InputOffset()), d.items, 0)
	}
	if _, err := dec.Token(); err != io.EOF {
		return malformed(fmt.Sprintf("malformed JSON at byte %d: data after the array", dec.InputOffset()), d.items, 0)
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

// item parses one reading; line is its NDJSON line, or 0. It returns an
// error only when the whole request must stop (malformed JSON, too many
// readings); invalid readings are collected.
func (d *v1Decoder) item(raw []byte, line int) error {
	if d.items == d.maxItems {
		return refusal(http.StatusRequestEntityTooLarge, reasonTooLarge,
			fmt.Sprintf("more than %d readings in one request: split it", d.maxItems))
	}
	index := d.items
	d.items++
	var r ingest.Reading
	err := ingest.ParseObject(raw, &r)
	if err == nil {
		r.ReceivedAt = d.now
		r.Normalize()
		err = r.Validate(d.lim)
	}
	if err == nil {
		if d.invalid == 0 {
			d.rs = append(d.rs, r)
		}
		return nil
	}
	fe := &ingest.FieldError{Field: "body", Type: "invalid", Msg: err.Error()}
	errors.As(err, &fe)
	if fe.Type == "json_invalid" || (fe.Field == "body" && fe.Type == "type" && !json.Valid(raw)) {
		// Array items were parsed by the array's decoder: only a single
		// object or an NDJSON line gets here.
		if line > 0 {
			return malformed(fmt.Sprintf("malformed JSON on line %d: %s", line, fe.Msg), index, line)
		}
		msg := "malformed JSON: " + fe.Msg
		if strings.Contains(msg, "after top-level value") {
			msg += " (for one reading per line send Content-Type: application/x-ndjson)"
		}
		return malformed(msg, index, line)
	}
	d.invalid++
	d.rs = nil // all or nothing: no reading of this request will be stored
	if len(d.details) < maxDetails {
		d.details = append(d.details, v1Detail{Index: index, Line: line, Field: fe.Field, Type: fe.Type, Msg: fe.Msg})
	}
	return nil
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
