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
// every other field is kept in r.Payload. If r.DeviceID is already set (the
// MQTT topic named the device) a "device_id" in the object must equal it;
// otherwise "device_id" is required. An unpaired UTF-16 surrogate escape in
// the device id or in a field name is refused (encoding/json would turn it
// into U+FFFD). ParseObject does not set ReceivedAt and does not call
// Validate. Errors are *FieldError wrapping ErrInvalidReading.
func ParseObject(data []byte, r *Reading) error {
	if !utf8.Valid(data) {
		return fieldErr("body", "format", "is not valid UTF-8")
	}
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return fieldErr("body", "type", "must be a JSON object")
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return jsonSyntaxError(err)
	}
	if raw, ok := fields[JSONDeviceID]; ok {
		delete(fields, JSONDeviceID)
		// encoding/json decodes an unpaired surrogate escape to U+FFFD
		// without a word: "a\ud800" and "a\udc00" would become one device.
		if err := checkEscapes(raw, JSONDeviceID); err != nil {
			return err
		}
		var id string
		if err := json.Unmarshal(raw, &id); err != nil {
			return fieldErr(JSONDeviceID, "type", "must be a string")
		}
		if r.DeviceID != "" && id != r.DeviceID {
			return fieldErr(JSONDeviceID, "format", "%q does not match the device %q the reading was sent for", id, r.DeviceID)
		}
		r.DeviceID = id
	} else if r.DeviceID == "" {
		return fieldErr(JSONDeviceID, "missing", "field required")
	}
	raw, ok := fields[JSONReading]
	if !ok {
		return fieldErr(JSONReading, "missing", "field required")
	}
	delete(fields, JSONReading)
	v, err := ParseNumber(raw)
	if err != nil {
		return err
	}
	r.Value = v
	if raw, ok := fields[JSONTime]; ok {
		delete(fields, JSONTime)
		if string(raw) != "null" {
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return fieldErr(JSONTime, "type", "must be an RFC 3339 string such as \"2026-11-28T08:00:00Z\"")
			}
			t, err := ParseTime(s)
			if err != nil {
				return err
			}
			r.Time = t
		}
	}
	// Field names were decoded too, so Validate cannot see an unpaired
	// surrogate escape in one; U+FFFD in a name is the only trace of it.
	for name := range fields {
		if strings.ContainsRune(name, utf8.RuneError) {
			if err := checkEscapes(data, "payload"); err != nil {
				return err
			}
			break
		}
	}
	r.Payload = nil
	if len(fields) > 0 {
		// Marshal sorts the top-level keys and compacts the values (nested objects keep
		// the sender's key order): a stable, compact form for jsonb.
		p, err := json.Marshal(fields)
		if err != nil {
			return fieldErr("payload", "format", "cannot be encoded: %v", err)
		}
		r.Payload = p
	}
	return nil
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

// ParseTime parses an RFC 3339 time such as "2026-11-28T08:00:00.123Z".
func ParseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fieldErr(JSONTime, "format", "%.40q is not an RFC 3339 time such as \"2026-11-28T08:00:00Z\"", s)
	}
	return t, nil
}

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
