package httpgw

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"firehose/ingest"
	"firehose/internal/jsonscan"
)

// The seed's FastAPI endpoint judged bodies with Python's json.loads, then
// pydantic v2 in lax mode. This file is that emulation: which values pass as
// an int or a datetime, and the 422 answer's words, types and locations.

// Pydantic v2's words for the errors the fast endpoint can report.
const (
	msgMissing      = "Field required"
	msgIntType      = "Input should be a valid integer"
	msgIntParsing   = "Input should be a valid integer, unable to parse string as an integer"
	msgIntFromFloat = "Input should be a valid integer, got a number with a fractional part"
	msgIntSize      = "Unable to parse input string as an integer, exceeded maximum size"
	msgFinite       = "Input should be a finite number"
	msgDatetimeType = "Input should be a valid datetime"
	msgDatetimeBad  = "Input should be a valid datetime, "
	msgModelType    = "Input should be a valid dictionary or object to extract fields from"
	msgJSONInvalid  = "JSON decode error"

	reasonRFC3339 = "expected an RFC 3339 datetime such as 2026-11-28T08:00:00Z"
	reasonAfter   = "dates after 9999 are not supported as unix timestamps"
	reasonBefore  = "dates before 1600 are not supported as unix timestamps"
)

// pydError is one item of a FastAPI 422 answer, in pydantic v2's shape.
type pydError struct {
	Type  string          `json:"type"`
	Loc   []any           `json:"loc"`
	Msg   string          `json:"msg"`
	Input json.RawMessage `json:"input"`
	Ctx   map[string]any  `json:"ctx,omitempty"`
}

var (
	jsonNull        = json.RawMessage("null")
	jsonEmptyObject = json.RawMessage("{}")
)

// fastInvalid is the 422 answer listing errs.
func fastInvalid(errs []pydError) *apiError {
	body, err := json.Marshal(struct {
		Detail []pydError `json:"detail"`
	}{errs})
	if err != nil {
		// Inputs are slices of a body the scanner accepted as JSON, so
		// this does not happen; answer without them rather than not at
		// all.
		for i := range errs {
			errs[i].Input = jsonNull
		}
		body, _ = json.Marshal(struct {
			Detail []pydError `json:"detail"`
		}{errs})
	}
	return &apiError{code: http.StatusUnprocessableEntity, reason: reasonInvalid, body: body}
}

func bodyLoc(field string) []any { return []any{"body", field} }

// intField validates a pydantic int field constrained to [lo, hi] and
// appends its errors to errs.
func intField(errs []pydError, name string, raw, body []byte, lo, hi int64) (int64, []pydError) {
	if raw == nil {
		return 0, append(errs, pydError{Type: "missing", Loc: bodyLoc(name), Msg: msgMissing, Input: body})
	}
	v, big, typ, msg := laxInt(raw)
	switch {
	case typ != "":
		return 0, append(errs, pydError{Type: typ, Loc: bodyLoc(name), Msg: msg, Input: raw})
	case big > 0 || v > hi:
		return 0, append(errs, pydError{Type: "less_than_equal", Loc: bodyLoc(name),
			Msg: "Input should be less than or equal to " + strconv.FormatInt(hi, 10), Input: raw, Ctx: map[string]any{"le": hi}})
	case big < 0 || v < lo:
		return 0, append(errs, pydError{Type: "greater_than_equal", Loc: bodyLoc(name),
			Msg: "Input should be greater than or equal to " + strconv.FormatInt(lo, 10), Input: raw, Ctx: map[string]any{"ge": lo}})
	}
	return v, errs
}

// laxInt converts a JSON value to an integer as pydantic's lax mode does:
// integers, integral floats (5.0), numeric strings (" 5 ", "5.00") and
// booleans are accepted. big is +1 or -1 when the integer is beyond int64;
// typ and msg name the error when the value is no integer.
func laxInt(raw []byte) (v int64, big int, typ, msg string) {
	switch raw[0] {
	case '"':
		s := raw[1 : len(raw)-1]
		if bytes.IndexByte(s, '\\') >= 0 {
			s = jsonscan.AppendUnquote(nil, raw)
		}
		return laxIntString(s)
	case 't':
		return 1, 0, "", ""
	case 'f':
		return 0, 0, "", ""
	case 'n', '[', '{':
		return 0, 0, "int_type", msgIntType
	}
	if bytes.IndexAny(raw, ".eE") < 0 {
		neg := raw[0] == '-'
		digits := raw
		if neg {
			digits = raw[1:]
		}
		if v, big, ok := parseDigits(digits, neg); ok {
			return v, big, "", ""
		}
		return 0, 0, "int_parsing", msgIntParsing
	}
	// Python's json.loads makes a float of any number with a fraction or an
	// exponent, and pydantic accepts it when it is integral.
	f, err := strconv.ParseFloat(string(raw), 64)
	switch {
	case math.IsInf(f, 0):
		return 0, 0, "finite_number", msgFinite
	case err != nil:
		return 0, 0, "int_parsing", msgIntParsing
	case f != math.Trunc(f):
		return 0, 0, "int_from_float", msgIntFromFloat
	case f >= 0x1p63:
		return 0, 1, "", ""
	case f < -0x1p63:
		return 0, -1, "", ""
	}
	return int64(f), 0, "", ""
}

// laxIntString parses a string as pydantic does for an int: surrounding
// space, a sign and trailing decimal zeros ("5.000") are allowed.
func laxIntString(s []byte) (v int64, big int, typ, msg string) {
	s = bytes.TrimSpace(s)
	if len(s) > 4300 {
		return 0, 0, "int_parsing_size", msgIntSize
	}
	neg := false
	if len(s) > 0 && (s[0] == '+' || s[0] == '-') {
		neg = s[0] == '-'
		s = s[1:]
	}
	if dot := bytes.IndexByte(s, '.'); dot >= 0 {
		if strings.Trim(string(s[dot+1:]), "0") != "" {
			return 0, 0, "int_parsing", msgIntParsing
		}
		s = s[:dot]
	}
	v, big, ok := parseDigits(s, neg)
	if !ok {
		return 0, 0, "int_parsing", msgIntParsing
	}
	return v, big, "", ""
}

// parseDigits parses unsigned decimal digits, negated when neg. big is +1 or
// -1 when the value is beyond int64; ok is false when s is not all digits.
func parseDigits(s []byte, neg bool) (v int64, big int, ok bool) {
	if len(s) == 0 {
		return 0, 0, false
	}
	var u uint64
	over := false
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, 0, false
		}
		if u > (math.MaxUint64-9)/10 {
			over = true // past int64 for certain; keep checking the digits
			continue
		}
		u = u*10 + uint64(c-'0')
	}
	switch {
	case neg && (over || u > 1<<63):
		return 0, -1, true
	case !neg && (over || u > math.MaxInt64):
		return 0, 1, true
	case neg:
		return -int64(u), 0, true
	}
	return int64(u), 0, true
}

// timeField validates the optional timestamp field: absent or null means
// "not given" (the zero Time); a string is a datetime; a number is Unix time
// in seconds, or milliseconds beyond 2e10, as pydantic reads it.
func timeField(errs []pydError, raw []byte) (time.Time, []pydError) {
	if raw == nil || raw[0] == 'n' {
		return time.Time{}, errs
	}
	bad := func(reason string) (time.Time, []pydError) {
		return time.Time{}, append(errs, pydError{Type: "datetime_parsing", Loc: bodyLoc("timestamp"),
			Msg: msgDatetimeBad + reason, Input: raw, Ctx: map[string]any{"error": reason}})
	}
	switch raw[0] {
	case 't', 'f', '[', '{':
		return time.Time{}, append(errs, pydError{Type: "datetime_type", Loc: bodyLoc("timestamp"), Msg: msgDatetimeType, Input: raw})
	case '"':
		s := raw[1 : len(raw)-1]
		if bytes.IndexByte(s, '\\') >= 0 {
			s = jsonscan.AppendUnquote(nil, raw)
		}
		t, ok := parseDatetime(s)
		if !ok {
			return bad(reasonRFC3339)
		}
		if t.IsZero() {
			// 0001-01-01T00:00:00Z is the zero Time, which Normalize
			// would take for "not given" and replace with the time of
			// receipt.
			return t, append(errs, validationError(ingest.ErrZeroTime, "", raw))
		}
		return t, errs
	}
	f, _ := strconv.ParseFloat(string(raw), 64)
	perSecond := 1.0
	if math.Abs(f) > 2e10 {
		perSecond = 1000 // milliseconds
	}
	switch {
	case f/perSecond > 253402300799: // 9999-12-31T23:59:59Z
		return bad(reasonAfter)
	case f/perSecond < -11676096000: // 1600-01-01T00:00:00Z
		return bad(reasonBefore)
	}
	// Whole seconds, then the rest in microseconds (pydantic's resolution);
	// the rest is computed in f's unit so integral milliseconds stay exact.
	sec := math.Floor(f / perSecond)
	us := math.Round((f - sec*perSecond) * 1e6 / perSecond)
	return time.Unix(int64(sec), int64(us)*1000).UTC(), errs
}

// parseDatetime parses RFC 3339 and the forms pydantic also reads: a space or
// 't' between date and time, a date alone (midnight), no offset (UTC).
func parseDatetime(s []byte) (time.Time, bool) {
	const dateLen = len("2006-01-02")
	var a [64]byte
	if len(s) < dateLen || len(s) > len(a)-len("T00:00:00Z") {
		return time.Time{}, false
	}
	b := append(a[:0], s...)
	if len(b) == dateLen {
		b = append(b, "T00:00:00Z"...)
	}
	if b[dateLen] == ' ' || b[dateLen] == 't' {
		b[dateLen] = 'T'
	}
	if last := len(b) - 1; b[last] == 'z' {
		b[last] = 'Z'
	}
	if b[len(b)-1] != 'Z' && bytes.IndexAny(b[dateLen:], "+-") < 0 {
		b = append(b, 'Z')
	}
	t, err := time.Parse(time.RFC3339Nano, string(b))
	return t, err == nil
}

// headerError reports an invalid X-Device-ID header.
func headerError(device string, err error) pydError {
	msg := err.Error()
	var fe *ingest.FieldError
	if errors.As(err, &fe) {
		msg = fe.Msg
	}
	return pydError{Type: "value_error", Loc: []any{"header", "x-device-id"}, Msg: "Value error, device id " + msg,
		Input: appendJSONString(nil, device), Ctx: map[string]any{"error": "device id " + msg}}
}

// validationError reports what ingest's Validate refused, in pydantic's
// shape of a custom validator's error.
func validationError(err error, device string, timestamp []byte) pydError {
	var fe *ingest.FieldError
	if !errors.As(err, &fe) {
		return pydError{Type: "value_error", Loc: []any{"body"}, Msg: "Value error, " + err.Error(), Input: jsonNull,
			Ctx: map[string]any{"error": err.Error()}}
	}
	switch fe.Field {
	case ingest.JSONDeviceID:
		return headerError(device, err)
	case ingest.JSONTime:
		if timestamp == nil {
			timestamp = jsonNull
		}
		return pydError{Type: "value_error", Loc: bodyLoc("timestamp"), Msg: "Value error, timestamp " + fe.Msg,
			Input: timestamp, Ctx: map[string]any{"error": "timestamp " + fe.Msg}}
	}
	return pydError{Type: "value_error", Loc: bodyLoc(fe.Field), Msg: "Value error, " + fe.Error(), Input: jsonNull,
		Ctx: map[string]any{"error": fe.Error()}}
}

// jsonInvalid is FastAPI's answer to a body json.loads refused: the position
// and the parser's words.
func jsonInvalid(pos int, reason string) pydError {
	return pydError{Type: "json_invalid", Loc: []any{"body", pos}, Msg: msgJSONInvalid, Input: jsonEmptyObject,
		Ctx: map[string]any{"error": reason}}
}

func jsonSyntaxError(se *jsonscan.SyntaxError, bodyLen int) pydError {
	if se == nil {
		return jsonInvalid(0, "invalid JSON")
	}
	// Offset counts the bytes read, the bad one included; Python reports
	// the position of the bad character.
	pos := int(se.Offset) - 1
	if strings.HasPrefix(se.Error(), "unexpected end") {
		pos = bodyLen
	}
	return jsonInvalid(max(pos, 0), se.Error())
}

// invalidUTF8At returns the offset of the first byte that is not UTF-8.
func invalidUTF8At(b []byte) int {
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			return i
		}
		i += size
	}
	return len(b)
}
