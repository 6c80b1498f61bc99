package ingest

import (
	"bytes"
	"errors"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"firehose/internal/jsonscan"
)

// JSON field names of a reading object, shared by the HTTP native endpoint
// and MQTT payloads. Every other field of the object goes to Payload.
const (
	JSONDeviceID = "device_id"
	JSONReading  = "reading"
	JSONTime     = "ts"
	// JSONMessageID is the field of a message id (a string or a number),
	// which --dedup id uses; it stays in Payload too.
	JSONMessageID = "msg_id"
)

// ParseObject fills r from a JSON object such as
//
//	{"device_id": "pump-7", "reading": 21.5, "ts": "2026-11-28T08:00:00Z", "battery": 97}
//
// "reading" is required and must be a JSON number; "ts" is optional RFC 3339;
// every other field is kept in r.Payload, a JSON object of those members in
// the sender's order, each value compacted (jsonb orders keys itself). If
// r.DeviceID is already set (the MQTT topic named the device) a "device_id"
// in the object must equal it; otherwise "device_id" is required. An
// unpaired UTF-16 surrogate escape in the device id is refused (decoding it
// would turn it into U+FFFD); in other fields Validate refuses it. When a
// field appears twice the last one counts. ParseObject does not set
// ReceivedAt and does not call Validate. Errors are *FieldError wrapping
// ErrInvalidReading; the first that applies of: invalid UTF-8 anywhere
// ("body", "format"), not an object ("body", "type"), not JSON ("body",
// "json_invalid", in encoding/json's words), then the fields'. r is left
// untouched by the first three.
//
// It validates and walks the object in one pass (internal/jsonscan) rather
// than decoding into a map: readings arrive by the tens of thousands a
// second. The same pass checks the payload for what PostgreSQL refuses
// (jsonscan notes it), and r keeps that beside a clean payload: Validate
// does not read it again.
func ParseObject(data []byte, r *Reading) error {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		if !utf8.Valid(data) {
			return errBodyUTF8()
		}
		return errNotObject()
	}
	var s jsonscan.Scanner
	s.Reset(data)
	f, err := readObject(&s)
	if err == nil {
		s.End()
	}
	if se := s.SyntaxError(); se != nil {
		if !utf8.Valid(data) {
			return errBodyUTF8() // invalid UTF-8 ranks before a syntax error, wherever it is
		}
		return fieldErr("body", "json_invalid", "invalid JSON at byte %d: %v", se.Offset, se)
	}
	if err != nil {
		return err
	}
	return f.apply(r)
}

// ReadObject reads the next value of s as a reading object, as ParseObject
// reads a whole body, and fills r from it. It returns s's *SyntaxError when
// the value is not JSON (s cannot go on), or else a *FieldError: invalid
// UTF-8 in the value, not an object, or a field's error. After a
// *FieldError s is past the value. It resets s's record of invalid UTF-8
// (Scanner.ForgetInvalidUTF8). Callers walking an array or a stream of
// readings use it to read each one once.
func ReadObject(s *jsonscan.Scanner, r *Reading) error {
	f, err := readObject(s)
	if err != nil {
		return err
	}
	return f.apply(r)
}

// The errors of a body as a whole, fresh each time (callers may change them).
func errBodyUTF8() error  { return fieldErr("body", "format", "is not valid UTF-8") }
func errNotObject() error { return fieldErr("body", "type", "must be a JSON object") }

// objectFields are the raw JSON values of a reading object's fields, nil
// when absent, and its other members as a payload object.
type objectFields struct {
	id, reading, ts []byte
	readingKind     jsonscan.Kind
	msgID           []byte // also in payload
	msgIDKind       jsonscan.Kind
	payload         []byte
	check           payloadCheck // of payload, found clean as it was read; zero if not
}

// readObject reads the next value of s into objectFields, validating it.
func readObject(s *jsonscan.Scanner) (objectFields, error) {
	var f objectFields
	s.ForgetInvalidUTF8()
	if !s.EnterObject() {
		if _, _, ok := s.Value(); !ok {
			return f, s.Err()
		}
		if s.InvalidUTF8() >= 0 {
			return f, errBodyUTF8()
		}
		return f, errNotObject()
	}
	start := s.Pos() - 1
	// What PostgreSQL would refuse is noted member by member, in the same
	// pass: only the members that go to the payload count.
	s.ForgetProblems()
	base := s.Deepest() // the object's own depth
	f.check.depth = 1   // the payload's braces
	clean := true
	var nameBuf [32]byte
	for key, ok := s.NextMember(); ok; key, ok = s.NextMember() {
		val, kind, ok := s.Value()
		if !ok {
			return f, s.Err()
		}
		switch string(memberName(nameBuf[:0], key)) { // compared, not kept: no allocation
		case JSONDeviceID:
			f.id = val
		case JSONReading:
			f.reading, f.readingKind = val, kind
		case JSONTime:
			f.ts = val
		case JSONMessageID:
			f.msgID, f.msgIDKind = val, kind
			fallthrough // kept in the payload too
		default:
			if f.payload == nil {
				f.payload = append(make([]byte, 0, s.Pos()-start+16), '{')
			} else {
				f.payload = append(f.payload, ',')
			}
			f.payload = append(append(f.payload, key...), ':')
			f.payload = jsonscan.AppendCompact(f.payload, val)
			clean = clean && f.check.add(s, base)
		}
		s.ForgetProblems()
	}
	if !clean {
		f.check = payloadCheck{} // Validate reads the payload again and says what is wrong
	}
	if err := s.Err(); err != nil {
		return f, err
	}
	if s.InvalidUTF8() >= 0 {
		return f, errBodyUTF8()
	}
	return f, nil
}

// apply checks the fields and sets them in r.
func (f *objectFields) apply(r *Reading) error {
	if f.id != nil {
		id, err := jsonString(f.id, JSONDeviceID, "must be a string")
		if err != nil {
			return err
		}
		if r.DeviceID != "" && id != r.DeviceID {
			return fieldErr(JSONDeviceID, "format", "%q does not match the device %q the reading was sent for", id, r.DeviceID)
		}
		r.DeviceID = id
	} else if r.DeviceID == "" {
		return fieldErr(JSONDeviceID, "missing", "field required")
	}
	if f.reading == nil {
		return fieldErr(JSONReading, "missing", "field required")
	}
	if f.readingKind != jsonscan.Number {
		return errNotNumber()
	}
	v, err := parseFloat(f.reading)
	if err != nil {
		return err
	}
	r.Value = v
	if f.ts != nil && string(f.ts) != "null" {
		s, err := jsonString(f.ts, JSONTime, "must be an RFC 3339 string such as \"2026-11-28T08:00:00Z\"")
		if err != nil {
			return err
		}
		t, err := ParseTime(s)
		if err != nil {
			return err
		}
		r.Time = t
	}
	r.Payload, r.checked = nil, payloadCheck{}
	if f.payload != nil {
		r.Payload = append(f.payload, '}')
		if f.check.depth > 0 {
			r.checked = f.check.of(r.Payload)
		}
	}
	r.ID = ""
	switch f.msgIDKind {
	case jsonscan.String:
		// Not an id when it does not decode: the field is only payload.
		r.ID, _ = jsonString(f.msgID, JSONMessageID, "")
	case jsonscan.Number:
		r.ID = string(f.msgID)
	}
	return nil
}

// memberName is the name a quoted member key stands for, decoded as
// encoding/json decodes it (into buf when it holds escapes).
func memberName(buf, key []byte) []byte {
	inner := key[1 : len(key)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return inner
	}
	return jsonscan.AppendUnquote(buf, key)
}

// jsonString decodes a JSON string value, or fails with a type error of
// field. Unpaired surrogate escapes and \u0000 are refused as errors of field.
func jsonString(raw []byte, field, typeMsg string) (string, error) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", fieldErr(field, "type", "%s", typeMsg)
	}
	inner := raw[1 : len(raw)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return string(inner), nil
	}
	if err := checkEscapes(raw, field); err != nil {
		return "", err
	}
	return string(jsonscan.AppendUnquote(nil, raw)), nil
}

// ParseNumber parses a JSON number (or a bare number such as an MQTT payload
// "21.5", white space around it ignored) as the reading's value. What JSON
// does not call a number ("NaN", "Infinity", "0x1p4", "1_000", "007") is
// refused with type "type"; a number beyond a 64-bit float with type "range".
func ParseNumber(raw []byte) (float64, error) {
	raw = bytes.TrimSpace(raw)
	// strconv.ParseFloat also takes what JSON does not: "0x1p4", "1_000",
	// "007", "1.", "-Inf".
	if !jsonscan.IsNumber(raw) {
		return 0, errNotNumber()
	}
	return parseFloat(raw)
}

func errNotNumber() error { return fieldErr(JSONReading, "type", "must be a number") }

// parseFloat parses raw, a JSON number, as the reading's value.
func parseFloat(raw []byte) (float64, error) {
	v, err := strconv.ParseFloat(string(raw), 64)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return 0, fieldErr(JSONReading, "range", "%.40s is out of the range of a 64-bit float", raw)
		}
		return 0, errNotNumber()
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fieldErr(JSONReading, "range", "must be a finite number")
	}
	return v, nil
}

// ParseTime parses an RFC 3339 time such as "2026-11-28T08:00:00.123Z". The
// instant 0001-01-01T00:00:00Z is refused: it is the zero Time, which a
// Reading takes for "not given" (Normalize would replace it with the time
// of receipt instead of Validate refusing it).
func ParseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fieldErr(JSONTime, "format", "%.40q is not an RFC 3339 time such as \"2026-11-28T08:00:00Z\"", s)
	}
	if t.IsZero() {
		return time.Time{}, ErrZeroTime
	}
	return t, nil
}

// ErrZeroTime is the error of a measured time at the instant
// 0001-01-01T00:00:00Z, the zero Time (see ParseTime); it wraps
// ErrInvalidReading.
var ErrZeroTime = fieldErr(JSONTime, "range", "0001-01-01T00:00:00Z is outside the years 1678 to 2261 that can be stored")

// checkJSON checks what PostgreSQL's jsonb would refuse in syntactically valid
// JSON, so that it is refused at the edge rather than in a COPY: invalid
// UTF-8, the escape \u0000, unpaired UTF-16 surrogate escapes, numbers beyond
// a 64-bit float, and nesting deeper than maxDepth. It is the check of a
// payload that no pass read before: Validate does not call it on a payload
// that ParseObject found clean as it read it (see Reading.checkPayload).
func checkJSON(data []byte, maxDepth int) error {
	if !utf8.Valid(data) {
		return fieldErr("payload", "format", "is not valid UTF-8")
	}
	depth := 0
	for i := 0; i < len(data); i++ {
		switch c := data[i]; {
		case c == '{' || c == '[':
			depth++
			if depth > maxDepth {
				return fieldErr("payload", "too_deep", "nests objects and arrays deeper than %d levels", maxDepth)
			}
		case c == '}' || c == ']':
			depth--
		case c == '"':
			end, err := checkString(data, i+1)
			if err != nil {
				return err
			}
			i = end
		case c == '-' || (c >= '0' && c <= '9'):
			j := i + 1
			for j < len(data) && strings.IndexByte("0123456789.eE+-", data[j]) >= 0 {
				j++
			}
			if _, err := strconv.ParseFloat(string(data[i:j]), 64); err != nil {
				return fieldErr("payload", "range", "number %.40s is out of the range of a 64-bit float", data[i:j])
			}
			i = j - 1
		}
	}
	return nil
}

// CheckJSON refuses what PostgreSQL's jsonb would refuse in the valid JSON
// data, as checkJSON does for a payload: invalid UTF-8, the escape \u0000,
// unpaired UTF-16 surrogate escapes, numbers beyond a 64-bit float, and
// nesting deeper than maxDepth (<= 0: DefaultLimits.MaxDepth). The error
// is a *FieldError of field "payload". Mapping rules check a typed table's
// jsonb values with it.
func CheckJSON(data []byte, maxDepth int) error {
	if maxDepth <= 0 {
		maxDepth = DefaultLimits.MaxDepth
	}
	return checkJSON(data, maxDepth)
}

// readPayload is checkJSON without a depth limit, for CheckPayload: the
// first thing jsonb would refuse, or nil, and the deepest nesting before it
// (checkJSON refuses the depth when that is beyond its limit). The two
// loops must stay alike: TestValidationSameAsBefore compares them with the
// old checkJSON.
func readPayload(data []byte) (deepest int, err error) {
	if !utf8.Valid(data) {
		return 0, fieldErr("payload", "format", "is not valid UTF-8")
	}
	depth := 0
	for i := 0; i < len(data); i++ {
		switch c := data[i]; {
		case c == '{' || c == '[':
			depth++
			deepest = max(deepest, depth)
		case c == '}' || c == ']':
			depth--
		case c == '"':
			end, err := checkString(data, i+1)
			if err != nil {
				return deepest, err
			}
			i = end
		case c == '-' || (c >= '0' && c <= '9'):
			j := i + 1
			for j < len(data) && strings.IndexByte("0123456789.eE+-", data[j]) >= 0 {
				j++
			}
			if _, err := strconv.ParseFloat(string(data[i:j]), 64); err != nil {
				return deepest, fieldErr("payload", "range", "number %.40s is out of the range of a 64-bit float", data[i:j])
			}
			i = j - 1
		}
	}
	return deepest, nil
}

// payloadCheck records that the pass that read a payload found nothing in
// it for checkJSON to refuse but, perhaps, its depth: ParseObject and
// CheckPayload keep it in the Reading beside a clean payload.
type payloadCheck struct {
	at    *byte // &Payload[0] of the payload it is of; nil: none
	n     int32 // the payload's length
	depth int32 // the payload's deepest nesting, its braces counted
}

// add adds to c what s found in the member of a reading object just read
// (the object at depth base), a member that goes to the payload. It
// reports false when the member holds something jsonb refuses.
func (c *payloadCheck) add(s *jsonscan.Scanner, base int) bool {
	if p, _ := s.Problem(); p != jsonscan.NoProblem {
		return false
	}
	c.depth = max(c.depth, int32(s.Deepest()-base+1))
	return true
}

// of returns c as the check of payload.
func (c payloadCheck) of(payload []byte) payloadCheck {
	if len(payload) == 0 || len(payload) > math.MaxInt32 {
		return payloadCheck{}
	}
	c.at, c.n = &payload[0], int32(len(payload))
	return c
}

// is reports whether c is the check of payload: the same slice.
func (c *payloadCheck) is(payload []byte) bool {
	return c.at != nil && len(payload) == int(c.n) && &payload[0] == c.at
}

// CheckPayload reads r.Payload now for what Validate checks in it and, when
// it is clean (but for its depth, which Validate compares with its limit),
// keeps that in r: Validate on r, or on a copy of r, does not read the
// payload again while r.Payload is the same slice. Readings that share one
// payload, such as the rows of a mapped message, call it once. (ParseObject
// does it as it reads a payload.)
func (r *Reading) CheckPayload() {
	r.checked = payloadCheck{}
	if r.Payload == nil {
		return
	}
	if deepest, err := readPayload(r.Payload); err == nil && deepest <= math.MaxInt32 {
		r.checked = payloadCheck{depth: int32(deepest)}.of(r.Payload)
	}
}

// checkPayload is checkJSON of r.Payload, read again only when no pass that
// read it found it clean.
func (r *Reading) checkPayload(maxDepth int) error {
	if !r.checked.is(r.Payload) {
		return checkJSON(r.Payload, maxDepth)
	}
	if int(r.checked.depth) > maxDepth {
		return fieldErr("payload", "too_deep", "nests objects and arrays deeper than %d levels", maxDepth)
	}
	return nil
}

// checkEscapes refuses, as errors of field, the escapes \u0000 and unpaired
// UTF-16 surrogates in any string of data, which must be valid JSON.
func checkEscapes(data []byte, field string) error {
	for i := 0; i < len(data); i++ {
		if data[i] != '"' {
			continue
		}
		end, err := checkString(data, i+1)
		if err != nil {
			if fe, ok := err.(*FieldError); ok {
				fe.Field = field
			}
			return err
		}
		i = end
	}
	return nil
}

// checkString scans a JSON string whose body starts at i and returns the index
// of its closing quote.
func checkString(data []byte, i int) (int, error) {
	for ; i < len(data); i++ {
		switch data[i] {
		case '"':
			return i, nil
		case '\\':
			if i+1 < len(data) && data[i+1] == 'u' {
				r, ok := hex4(data, i+2)
				switch {
				case !ok:
					return 0, fieldErr("payload", "format", "has a malformed \\u escape")
				case r == 0:
					return 0, fieldErr("payload", "format", "contains the escape \\u0000, which PostgreSQL cannot store")
				case r >= 0xD800 && r < 0xDC00:
					lo, ok := rune(0), i+7 < len(data) && data[i+6] == '\\' && data[i+7] == 'u'
					if ok {
						lo, ok = hex4(data, i+8)
					}
					if !ok || lo < 0xDC00 || lo > 0xDFFF {
						return 0, fieldErr("payload", "format", "has an unpaired UTF-16 surrogate escape")
					}
					i += 11
					continue
				case r >= 0xDC00 && r <= 0xDFFF:
					return 0, fieldErr("payload", "format", "has an unpaired UTF-16 surrogate escape")
				}
				i += 5
				continue
			}
			i++
		}
	}
	return 0, fieldErr("payload", "format", "has an unterminated string")
}

func hex4(data []byte, i int) (rune, bool) {
	if i+4 > len(data) {
		return 0, false
	}
	v, err := strconv.ParseUint(string(data[i:i+4]), 16, 32)
	return rune(v), err == nil
}
