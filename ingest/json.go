package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// JSON field names of a reading object, shared by the HTTP native endpoint
// and MQTT payloads. Every other field of the object goes to Payload.
const (
	JSONDeviceID = "device_id"
	JSONReading  = "reading"
	JSONTime     = "ts"
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
// ErrInvalidReading.
//
// It walks the object's members in place rather than decoding into a map:
// readings arrive by the tens of thousands a second.
func ParseObject(data []byte, r *Reading) error {
	if !utf8.Valid(data) {
		return fieldErr("body", "format", "is not valid UTF-8")
	}
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return fieldErr("body", "type", "must be a JSON object")
	}
	if !json.Valid(data) {
		var v any
		return jsonSyntaxError(json.Unmarshal(data, &v))
	}
	var idRaw, readingRaw, tsRaw, payload []byte
	// data is one valid JSON object: every index below stays in bounds.
	for i := skipSpace(data, 1); data[i] != '}'; {
		keyEnd := stringEnd(data, i)
		key := data[i:keyEnd]
		i = skipSpace(data, skipSpace(data, keyEnd)+1) // past ':'
		valEnd := valueEnd(data, i)
		val := data[i:valEnd]
		switch memberName(key) {
		case JSONDeviceID:
			idRaw = val
		case JSONReading:
			readingRaw = val
		case JSONTime:
			tsRaw = val
		default:
			if payload == nil {
				payload = append(make([]byte, 0, len(data)), '{')
			} else {
				payload = append(payload, ',')
			}
			payload = append(append(payload, key...), ':')
			payload = appendCompact(payload, val)
		}
		i = skipSpace(data, valEnd)
		if data[i] == ',' {
			i = skipSpace(data, i+1)
		}
	}
	if idRaw != nil {
		id, err := jsonString(idRaw, JSONDeviceID, "must be a string")
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
	if readingRaw == nil {
		return fieldErr(JSONReading, "missing", "field required")
	}
	v, err := ParseNumber(readingRaw)
	if err != nil {
		return err
	}
	r.Value = v
	if tsRaw != nil && string(tsRaw) != "null" {
		s, err := jsonString(tsRaw, JSONTime, "must be an RFC 3339 string such as \"2026-11-28T08:00:00Z\"")
		if err != nil {
			return err
		}
		t, err := ParseTime(s)
		if err != nil {
			return err
		}
		r.Time = t
	}
	r.Payload = nil
	if payload != nil {
		r.Payload = append(payload, '}')
	}
	return nil
}

// skipSpace returns the index of the first non-space byte at or after i.
func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

// stringEnd returns the index just past the JSON string starting at i.
func stringEnd(data []byte, i int) int {
	for j := i + 1; j < len(data); j++ {
		switch data[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return len(data)
}

// valueEnd returns the index just past the JSON value starting at i.
func valueEnd(data []byte, i int) int {
	switch data[i] {
	case '"':
		return stringEnd(data, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(data); j++ {
			switch data[j] {
			case '"':
				j = stringEnd(data, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return len(data)
	}
	j := i
	for j < len(data) && bytes.IndexByte([]byte(",}] \t\n\r"), data[j]) < 0 {
		j++
	}
	return j
}

// memberName is the name a quoted member key stands for.
func memberName(key []byte) string {
	inner := key[1 : len(key)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return string(inner) // compared at once, not kept: no allocation
	}
	var s string
	if json.Unmarshal(key, &s) != nil {
		return ""
	}
	return s
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
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fieldErr(field, "type", "%s", typeMsg)
	}
	return s, nil
}

// appendCompact appends the valid JSON value val without insignificant space.
func appendCompact(dst, val []byte) []byte {
	if bytes.IndexAny(val, " \t\n\r") < 0 {
		return append(dst, val...)
	}
	var b bytes.Buffer
	if json.Compact(&b, val) != nil {
		return append(dst, val...)
	}
	return append(dst, b.Bytes()...)
}

// ParseNumber parses a JSON number (or a bare number such as an MQTT payload
// "21.5", white space around it ignored) as the reading's value. What JSON
// does not call a number ("NaN", "Infinity", "0x1p4", "1_000", "007") is
// refused with type "type"; a number beyond a 64-bit float with type "range".
func ParseNumber(raw []byte) (float64, error) {
	s := strings.TrimSpace(string(raw))
	// strconv.ParseFloat also takes what JSON does not: "0x1p4", "1_000",
	// "007", "1.", "-Inf".
	if !isJSONNumber(s) {
		return 0, fieldErr(JSONReading, "type", "must be a number")
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return 0, fieldErr(JSONReading, "range", "%.40s is out of the range of a 64-bit float", s)
		}
		return 0, fieldErr(JSONReading, "type", "must be a number")
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fieldErr(JSONReading, "range", "must be a finite number")
	}
	return v, nil
}

// isJSONNumber reports whether s is a number in JSON's grammar,
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?.
func isJSONNumber(s string) bool {
	digits := func(i int) int {
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return i
	}
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && s[i] >= '1' && s[i] <= '9':
		i = digits(i)
	default:
		return false
	}
	if i < len(s) && s[i] == '.' {
		j := digits(i + 1)
		if j == i+1 {
			return false
		}
		i = j
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		j := digits(i)
		if j == i {
			return false
		}
		i = j
	}
	return i == len(s)
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

func jsonSyntaxError(err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fieldErr("body", "json_invalid", "invalid JSON at byte %d: %v", se.Offset, se)
	}
	return fieldErr("body", "json_invalid", "invalid JSON: %v", err)
}

// checkJSON checks what PostgreSQL's jsonb would refuse in syntactically valid
// JSON, so that it is refused at the edge rather than in a COPY: invalid
// UTF-8, the escape \u0000, unpaired UTF-16 surrogate escapes, numbers beyond
// a 64-bit float, and nesting deeper than maxDepth.
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
