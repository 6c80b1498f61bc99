package httpgw

import (
	"bytes"
	"math"
	"strconv"
	"unicode/utf8"

	"firehose/ingest"
	"firehose/internal/jsonscan"
)

// Range of PostgreSQL's smallint, the seed's reading column.
const (
	smallintMin = -32768
	smallintMax = 32767
)

var utf8BOM = []byte("\xEF\xBB\xBF")

// parseFast decodes a /readings/fast body into r, whose DeviceID (from the
// X-Device-ID header or the default) and ReceivedAt the caller set, then
// normalizes and validates r against lim. The payload {"id":N} is appended to
// buf and r.Payload shares it. parseFast returns buf and, when r is refused,
// every error found, in pydantic's shape.
func parseFast(body []byte, r *ingest.Reading, lim ingest.Limits, buf []byte) ([]byte, []pydError) {
	body = bytes.TrimPrefix(body, utf8BOM) // Python's json.loads accepts it
	var s jsonscan.Scanner
	s.Reset(body)
	first := s.Peek()
	if s.Pos() == len(body) {
		// FastAPI validates an empty body as a missing one.
		return buf, []pydError{{Type: "missing", Loc: []any{"body"}, Msg: msgMissing, Input: jsonNull}}
	}
	var f fastFields
	if first == '{' {
		f = scanFastFields(&s)
	} else {
		s.Value()
	}
	if !s.End() || s.InvalidUTF8() >= 0 {
		// json.loads reports invalid UTF-8 wherever it is, before any
		// syntax error.
		if !utf8.Valid(body) {
			return buf, []pydError{jsonInvalid(invalidUTF8At(body), "invalid UTF-8")}
		}
		return buf, []pydError{jsonSyntaxError(s.SyntaxError(), len(body))}
	}
	if first != '{' {
		return buf, []pydError{{Type: "model_attributes_type", Loc: []any{"body"}, Msg: msgModelType, Input: body}}
	}

	id, errs := intField(nil, "id", f.id, body, math.MinInt64, math.MaxInt64)
	v, errs := intField(errs, "reading", f.reading, body, smallintMin, smallintMax)
	t, errs := timeField(errs, f.timestamp)
	if errs != nil {
		// FastAPI lists header errors first. (On success Validate checks
		// the device.)
		if err := ingest.ValidateDeviceID(r.DeviceID, lim.MaxDeviceID); err != nil {
			errs = append([]pydError{headerError(r.DeviceID, err)}, errs...)
		}
		return buf, errs
	}
	r.Value = float64(v)
	r.Time = t
	n := len(buf)
	buf = append(buf, `{"id":`...)
	buf = strconv.AppendInt(buf, id, 10)
	buf = append(buf, '}')
	r.Payload = buf[n:len(buf):len(buf)]
	r.Normalize()
	if err := r.Validate(lim); err != nil {
		return buf, []pydError{validationError(err, r.DeviceID, f.timestamp)}
	}
	return buf, nil
}

// fastFields are the raw JSON values of the fields the fast endpoint reads;
// nil when absent. Other fields are ignored, as pydantic does by default.
type fastFields struct {
	id, reading, timestamp []byte
}

// scanFastFields reads the object next in s, validating all of it, and
// keeps the values of the fields the endpoint reads. Keys match exactly once
// unescaped, and a repeated key's last value wins, as with Python's
// json.loads. On a syntax error it stops; s.Err says where.
func scanFastFields(s *jsonscan.Scanner) fastFields {
	var f fastFields
	if !s.EnterObject() {
		return f
	}
	for key, ok := s.NextMember(); ok; key, ok = s.NextMember() {
		val, _, ok := s.Value()
		if !ok {
			return f
		}
		name := key[1 : len(key)-1]
		if bytes.IndexByte(name, '\\') >= 0 {
			var b [16]byte
			name = jsonscan.AppendUnquote(b[:0], key)
		}
		switch string(name) {
		case "id":
			f.id = val
		case "reading":
			f.reading = val
		case "timestamp":
			f.timestamp = val
		}
	}
	return f
}
