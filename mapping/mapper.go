package mapping

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/gjson"

	"firehose/ingest"
)

// MaxRows bounds the rows one message may map to.
const MaxRows = 10_000

// ErrUnmappable is wrapped by every error of a message a rule cannot map: the
// message is refused whole, and nothing of it is stored.
var ErrUnmappable = errors.New("message cannot be mapped")

// Error says which rule, column and path a message failed at. It wraps
// ErrUnmappable.
type Error struct {
	Rule string // the rule's name
	// Column is the typed table's column whose value failed, or "" (a rule
	// without a table, or a failure of no one column).
	Column string
	Path   string // the GJSON path, or "" when the message as a whole failed
	Msg    string
}

func (e *Error) Error() string {
	s := fmt.Sprintf("rule %q: ", e.Rule)
	if e.Column != "" {
		s += fmt.Sprintf("column %q: ", e.Column)
	}
	if e.Path != "" {
		s += fmt.Sprintf("path %q: ", e.Path)
	}
	return s + e.Msg
}

// Unwrap makes errors.Is(err, ErrUnmappable) true.
func (e *Error) Unwrap() error { return ErrUnmappable }

// Mapper holds a deployment's rules, in order.
type Mapper struct {
	rules []*compiled
	// tables are the typed tables' first declarations, in order.
	tables []*table
}

// New checks rules and returns their Mapper; the first bad rule is the
// error, naming it.
func New(rules []Rule) (*Mapper, error) {
	m := &Mapper{}
	names := map[string]bool{}
	for _, r := range rules {
		c, err := compile(r)
		if err != nil {
			return nil, err
		}
		if names[r.Name] {
			return nil, fmt.Errorf("rule %q: another rule has that name", r.Name)
		}
		names[r.Name] = true
		if c.table != nil {
			if err := m.addTable(c); err != nil {
				return nil, err
			}
		}
		m.rules = append(m.rules, c)
	}
	return m, nil
}

// addTable records the table of c, or checks that c declares it as the
// rule that first named it did and gives c that rule's shape.
func (m *Mapper) addTable(c *compiled) error {
	t := c.table
	for _, first := range m.tables {
		if first.shape.Table != t.shape.Table {
			continue
		}
		if diff := sameTable(first, t); diff != "" {
			return fmt.Errorf("rule %q: table %q is declared otherwise by rule %q: %s; rules that name one table declare it alike",
				c.Name, t.shape.Table, first.decl.Rule, diff)
		}
		t.shape = first.shape
		return nil
	}
	m.tables = append(m.tables, t)
	return nil
}

// Len is the number of rules.
func (m *Mapper) Len() int {
	if m == nil {
		return 0
	}
	return len(m.rules)
}

// Match is a rule that matched a message, with what the match captured.
type Match struct {
	rule *compiled
	caps map[string]string
}

// Rule is the matched rule's name.
func (mt Match) Rule() string { return mt.rule.Name }

// MatchTopic finds the first rule whose topic matches topic.
func (m *Mapper) MatchTopic(topic string) (Match, bool) {
	if m == nil {
		return Match{}, false
	}
	for _, r := range m.rules {
		if caps, ok := r.match(topic); ok {
			return Match{rule: r, caps: caps}, true
		}
	}
	return Match{}, false
}

// ForEndpoint finds the rule named name for an HTTP endpoint.
func (m *Mapper) ForEndpoint(endpoint, name string) (Match, bool) {
	if m == nil {
		return Match{}, false
	}
	for _, r := range m.rules {
		if r.Name == name && r.Endpoint == endpoint {
			return Match{rule: r}, true
		}
	}
	return Match{}, false
}

// Map turns payload, received at receivedAt, into its readings: one per
// metric (and per sample), all of one message sharing its device and, per
// sample, its time; with a rule that names a table, one per message (per
// sample) whose Row is a row of that table. They are normalized and
// validated against lim; any problem refuses the whole message with an
// *Error.
func (mt Match) Map(payload []byte, receivedAt time.Time, lim ingest.Limits) ([]ingest.Reading, error) {
	rs, err := mt.AppendMap(nil, payload, receivedAt, lim)
	if err != nil {
		return nil, err
	}
	return rs, nil
}

// AppendMap is Map appending the readings to dst, for a caller mapping
// many messages into one slice (a request of NDJSON). On error it returns
// dst as it was (its spare capacity may have been written).
func (mt Match) AppendMap(dst []ingest.Reading, payload []byte, receivedAt time.Time, lim ingest.Limits) ([]ingest.Reading, error) {
	r := mt.rule
	fail := func(path, format string, args ...any) error {
		return &Error{Rule: r.Name, Path: path, Msg: fmt.Sprintf(format, args...)}
	}
	if !gjson.ValidBytes(payload) {
		return dst, fail("", "the payload is not valid JSON")
	}
	root := gjson.ParseBytes(payload)
	if !root.IsObject() {
		return dst, fail("", "the payload is not a JSON object")
	}
	device := mt.caps[deviceCapture]
	if r.Device != "" {
		v := root.Get(r.Device)
		if v.Type != gjson.String || v.Str == "" {
			return dst, fail(r.Device, "the device id must be a non-empty string, found %s", describe(v))
		}
		device = v.Str
	}
	if err := ingest.ValidateDeviceID(device, lim.MaxDeviceID); err != nil {
		return dst, fail(r.Device, "device id %q: %v", device, err)
	}
	var id string
	if r.ID != "" {
		switch v := root.Get(r.ID); v.Type {
		case gjson.String:
			id = v.Str
		case gjson.Number:
			id = v.Raw
		}
		if id == "" {
			return dst, fail(r.ID, "the message id must be a non-empty string or a number, found %s", describe(root.Get(r.ID)))
		}
	}
	if r.table != nil {
		return mt.mapTable(dst, root, device, id, receivedAt, lim)
	}
	tags := mt.tags()
	series := seriesOf(tags)
	var out []ingest.Reading
	if r.Samples == "" {
		rows, err := r.mapOne(root, true, device, tags, series, receivedAt, lim)
		if err != nil {
			return dst, err
		}
		ingest.NameRows(rows, id)
		return append(dst, rows...), nil
	}
	arr := root.Get(r.Samples)
	if !arr.IsArray() {
		return dst, fail(r.Samples, "the samples must be an array, found %s", describe(arr))
	}
	var err error
	i := 0
	arr.ForEach(func(_, s gjson.Result) bool {
		if !s.IsObject() {
			err = fail(r.Samples+"."+strconv.Itoa(i), "a sample must be an object, found %s", describe(s))
			return false
		}
		var rows []ingest.Reading
		if rows, err = r.mapOne(s, false, device, tags, series, receivedAt, lim); err != nil {
			var me *Error
			if errors.As(err, &me) && me.Path != "" {
				me.Path = r.Samples + "." + strconv.Itoa(i) + "." + me.Path
			}
			return false
		}
		if len(out)+len(rows) > MaxRows {
			err = fail(r.Samples, "the message maps to more than %d rows", MaxRows)
			return false
		}
		out = append(out, rows...)
		i++
		return true
	})
	if err != nil {
		return dst, err
	}
	if len(out) == 0 {
		return dst, fail(r.Samples, "the samples array is empty")
	}
	ingest.NameRows(out, id)
	return append(dst, out...), nil
}

// tags are the topic's captures other than the device, sorted by name.
func (mt Match) tags() [][2]string {
	var t [][2]string
	for k, v := range mt.caps {
		if k != deviceCapture {
			t = append(t, [2]string{k, v})
		}
	}
	slices.SortFunc(t, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
	return t
}

// seriesOf is the identity the tags give a series beside its device (see
// ingest.Reading.Series): each tag's name and value, length-prefixed, in
// the tags' order (sorted by name); nil without tags. Every row of a
// message shares it.
func seriesOf(tags [][2]string) []byte {
	if len(tags) == 0 {
		return nil
	}
	var b []byte
	for _, t := range tags {
		for _, s := range t {
			b = binary.AppendUvarint(b, uint64(len(s)))
			b = append(b, s...)
		}
	}
	return b
}

// mapOne maps one object (the message, or a sample) to its rows.
func (r *compiled) mapOne(obj gjson.Result, isRoot bool, device string, tags [][2]string, series []byte, receivedAt time.Time, lim ingest.Limits) ([]ingest.Reading, error) {
	fail := func(path, format string, args ...any) error {
		return &Error{Rule: r.Name, Path: path, Msg: fmt.Sprintf(format, args...)}
	}
	var ts time.Time
	if r.Time != "" {
		v := obj.Get(r.Time)
		if !v.Exists() {
			return nil, fail(r.Time, "no time there")
		}
		var err error
		if ts, err = parseTime(v, r.TimeFormat); err != nil {
			return nil, fail(r.Time, "%v", err)
		}
	}
	used := map[string]bool{}
	if r.Time != "" {
		used[topField(r.Time)] = true
	}
	if isRoot && r.Device != "" {
		used[topField(r.Device)] = true
	}
	if isRoot && r.Samples != "" {
		used[topField(r.Samples)] = true
	}
	if isRoot && r.ID != "" {
		used[topField(r.ID)] = true
	}
	type value struct {
		name string
		v    float64
	}
	var vals []value
	if r.all {
		var err error
		obj.ForEach(func(k, v gjson.Result) bool {
			if used[k.Str] || r.exclude[k.Str] || v.Type != gjson.Number {
				return true
			}
			f, ferr := number(v)
			if ferr != nil {
				err = fail(escapePath(k.Str), "%v", ferr)
				return false
			}
			vals = append(vals, value{k.Str, f})
			used[k.Str] = true
			return true
		})
		if err != nil {
			return nil, err
		}
		if len(vals) == 0 {
			return nil, fail("", "no numeric field to take as a metric")
		}
	} else {
		for _, m := range r.metrics {
			v := obj.Get(m.path)
			if !v.Exists() {
				return nil, fail(m.path, "metric %q: no value there", m.name)
			}
			f, err := number(v)
			if err != nil {
				return nil, fail(m.path, "metric %q: %v", m.name, err)
			}
			vals = append(vals, value{m.name, f})
			used[topField(m.path)] = true
		}
	}
	payload, err := r.payload(obj, isRoot, used, tags)
	if err != nil {
		return nil, err
	}
	rows := make([]ingest.Reading, 0, len(vals))
	shared := ingest.Reading{DeviceID: device, Time: ts, ReceivedAt: receivedAt, Payload: payload, Series: series}
	shared.CheckPayload() // once for all the rows, which Validate each
	for _, v := range vals {
		rd := shared
		rd.Metric, rd.Value = v.name, v.v
		if v.name == ingest.DefaultMetric {
			rd.Metric = "" // the default metric travels in the encodings of old
		}
		rd.Normalize()
		if err := rd.Validate(lim); err != nil {
			var fe *ingest.FieldError
			path := ""
			if errors.As(err, &fe) && fe.Field == "ts" {
				path = r.Time
			}
			return nil, fail(path, "metric %q: %v", v.name, err)
		}
		rows = append(rows, rd)
	}
	if len(rows) > MaxRows {
		return nil, fail("", "the message maps to more than %d rows", MaxRows)
	}
	return rows, nil
}

// payload builds the rows' payload: the tags, then (PayloadRest) every
// top-level field of obj not used, as a compact JSON object; nil when empty.
func (r *compiled) payload(obj gjson.Result, isRoot bool, used map[string]bool, tags [][2]string) ([]byte, error) {
	if r.Payload == PayloadNone {
		return nil, nil
	}
	b := []byte{'{'}
	n := 0
	add := func(key string, raw string) {
		if n > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, key)
		b = append(b, ':')
		b = append(b, raw...)
		n++
	}
	for _, t := range tags {
		add(t[0], string(appendJSONString(nil, t[1])))
	}
	if r.Payload == PayloadRest {
		obj.ForEach(func(k, v gjson.Result) bool {
			if !used[k.Str] {
				add(k.Str, compact(v.Raw))
			}
			return true
		})
	}
	if n == 0 {
		return nil, nil
	}
	return append(b, '}'), nil
}

// compact removes the insignificant spaces of a JSON value.
func compact(raw string) string {
	if !strings.ContainsAny(raw, " \t\r\n") {
		return raw
	}
	var sb strings.Builder
	sb.Grow(len(raw))
	writeCompact(&sb, raw)
	return sb.String()
}

// writeCompact writes raw, valid JSON, to sb without the spaces outside its
// strings: json.Compact's result, without its buffer and its check.
func writeCompact(sb *strings.Builder, raw string) {
	start, inString := 0, false
	for i := 0; i < len(raw); i++ {
		switch c := raw[i]; {
		case inString && c == '\\':
			i++ // the escaped byte cannot end the string
		case c == '"':
			inString = !inString
		case !inString && (c == ' ' || c == '\t' || c == '\r' || c == '\n'):
			sb.WriteString(raw[start:i])
			start = i + 1
		}
	}
	sb.WriteString(raw[start:])
}

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // a string always marshals
	return append(b, q...)
}

// topField is the top-level field a simple path starts at ("t" for "t.v").
func topField(path string) string {
	var sb strings.Builder
	for i := 0; i < len(path); i++ {
		c := path[i]
		if c == '\\' && i+1 < len(path) {
			i++
			sb.WriteByte(path[i])
			continue
		}
		if c == '.' || c == '|' || c == '#' {
			break
		}
		sb.WriteByte(c)
	}
	return sb.String()
}

// number is a metric's value: a JSON number that a float64 holds, finite,
// or a boolean as 0/1.
func number(v gjson.Result) (float64, error) {
	switch v.Type {
	case gjson.Number:
		f, err := strconv.ParseFloat(v.Raw, 64)
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			return 0, fmt.Errorf("%s does not fit a 64-bit float", v.Raw)
		}
		return f, nil
	case gjson.True:
		return 1, nil
	case gjson.False:
		return 0, nil
	}
	return 0, fmt.Errorf("want a number, found %s", describe(v))
}

// parseTime reads a time in format ("" chooses by the JSON type).
func parseTime(v gjson.Result, format string) (time.Time, error) {
	if format == "" {
		format = FormatUnixMS
		if v.Type == gjson.String {
			format = FormatRFC3339
		}
	}
	if format == FormatRFC3339 {
		if v.Type != gjson.String {
			return time.Time{}, fmt.Errorf("want an RFC 3339 time string, found %s", describe(v))
		}
		t, err := time.Parse(time.RFC3339Nano, v.Str)
		if err != nil {
			return time.Time{}, fmt.Errorf("%q is not an RFC 3339 time", v.Str)
		}
		return t, nil
	}
	raw := v.Raw
	if v.Type == gjson.String {
		raw = v.Str
	} else if v.Type != gjson.Number {
		return time.Time{}, fmt.Errorf("want a Unix time (%s), found %s", format, describe(v))
	}
	var digits int // below a second
	switch format {
	case FormatUnixS:
		digits = 9
	case FormatUnixMS:
		digits = 6
	case FormatUnixUS:
		digits = 3
	}
	ns, err := scaled(raw, digits)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not a Unix time (%s): %v", raw, format, err)
	}
	return time.Unix(0, ns), nil
}

// scaled is the decimal raw times 10^digits as an int64, exactly for plain
// decimals ("1733040000.25" with 9 digits: 1733040000250000000), through a
// float for exponent forms.
func scaled(raw string, digits int) (int64, error) {
	if strings.ContainsAny(raw, "eE") {
		f, err := strconv.ParseFloat(raw, 64)
		v := f * math.Pow10(digits)
		if err != nil || math.IsNaN(v) || math.Abs(v) >= math.MaxInt64 {
			return 0, errors.New("not a number in range")
		}
		return int64(v), nil
	}
	whole, frac, _ := strings.Cut(raw, ".")
	neg := strings.HasPrefix(whole, "-")
	w, err := strconv.ParseInt(whole, 10, 64)
	if err != nil {
		return 0, errors.New("not a number in range")
	}
	if len(frac) > digits {
		frac = frac[:digits] // below a nanosecond
	}
	var f int64
	if frac != "" {
		if f, err = strconv.ParseInt(frac, 10, 64); err != nil || f < 0 {
			return 0, errors.New("not a number")
		}
	}
	f *= int64(math.Pow10(digits - len(frac)))
	scale := int64(math.Pow10(digits))
	if w > math.MaxInt64/scale || w < math.MinInt64/scale {
		return 0, errors.New("out of range")
	}
	v := w * scale
	if neg {
		f = -f
	}
	if (f > 0 && v > math.MaxInt64-f) || (f < 0 && v < math.MinInt64-f) {
		return 0, errors.New("out of range")
	}
	return v + f, nil
}

// describe names a JSON value's kind for an error.
func describe(v gjson.Result) string {
	switch {
	case !v.Exists():
		return "nothing"
	case v.Type == gjson.String:
		return "a string"
	case v.Type == gjson.Number:
		return "a number"
	case v.Type == gjson.True || v.Type == gjson.False:
		return "a boolean"
	case v.Type == gjson.Null:
		return "null"
	case v.IsArray():
		return "an array"
	}
	return "an object"
}

// TopicFilters are the MQTT topic filters of the rules that match topics,
// in order, each capture level as '+': what a subscriber subscribes to for
// the rules.
func (m *Mapper) TopicFilters() []string {
	if m == nil {
		return nil
	}
	var out []string
	for _, r := range m.rules {
		if r.Topic == "" {
			continue
		}
		levels := strings.Split(r.Topic, "/")
		for i, l := range levels {
			if strings.HasPrefix(l, "{") && strings.HasSuffix(l, "}") {
				levels[i] = "+"
			}
		}
		if f := strings.Join(levels, "/"); !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out
}
