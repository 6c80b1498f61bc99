package mapping

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/tidwall/gjson"

	"firehose/ingest"
	"firehose/typed"
)

// maxExponent bounds the exponent of a numeric value: PostgreSQL before 16
// refuses numeric input beyond 1e±1000, and big.Rat would compute 10^e.
const maxExponent = 1000

// mapTable maps a message (root) of a rule with a table: one reading per
// message, or per sample, whose Row is a row of the table, appended to dst
// (returned as it was on error).
func (mt Match) mapTable(dst []ingest.Reading, root gjson.Result, device, id string, receivedAt time.Time, lim ingest.Limits) ([]ingest.Reading, error) {
	r := mt.rule
	n := len(dst)
	if r.Samples == "" {
		out := append(dst, ingest.Reading{})
		if err := r.mapRow(&out[n], root, mt.caps, device, id, receivedAt, lim); err != nil {
			return dst, err
		}
		ingest.NameRows(out[n:], id)
		return out, nil
	}
	arr := root.Get(r.Samples)
	if !arr.IsArray() {
		return dst, &Error{Rule: r.Name, Path: r.Samples, Msg: "the samples must be an array, found " + describe(arr)}
	}
	out := dst
	var err error
	arr.ForEach(func(_, s gjson.Result) bool {
		at := func() string { return r.Samples + "." + strconv.Itoa(len(out)-n) }
		if !s.IsObject() {
			err = &Error{Rule: r.Name, Path: at(), Msg: "a sample must be an object, found " + describe(s)}
			return false
		}
		if len(out)-n == MaxRows {
			err = &Error{Rule: r.Name, Path: r.Samples, Msg: fmt.Sprintf("the message maps to more than %d rows", MaxRows)}
			return false
		}
		out = append(out, ingest.Reading{})
		if err = r.mapRow(&out[len(out)-1], s, mt.caps, device, id, receivedAt, lim); err != nil {
			out = out[:len(out)-1]
			var me *Error
			if errors.As(err, &me) {
				me.Path = strings.TrimSuffix(at()+"."+me.Path, ".")
			}
			return false
		}
		return true
	})
	if err != nil {
		return dst, err
	}
	if len(out) == n {
		return dst, &Error{Rule: r.Name, Path: r.Samples, Msg: "the samples array is empty"}
	}
	ingest.NameRows(out[n:], id)
	return out, nil
}

// mapRow maps obj (the message, or a sample) to rd, a row of the rule's
// table: the message's device, id and topic captures caps, received at
// receivedAt, validated against lim.
func (r *compiled) mapRow(rd *ingest.Reading, obj gjson.Result, caps map[string]string, device, id string, receivedAt time.Time, lim ingest.Limits) error {
	t := r.table
	fail := func(column, path, format string, args ...any) error {
		return &Error{Rule: r.Name, Column: column, Path: path, Msg: fmt.Sprintf(format, args...)}
	}
	timeName := t.cols[t.timeCol].name
	// One pass over obj's fields finds the values of the plain paths and
	// the unknown fields (a GJSON Get a path would read obj from its start
	// each time).
	var stack [16]gjson.Result
	got := stack[:0]
	if t.slots <= len(stack) {
		got = stack[:t.slots]
	} else {
		got = make([]gjson.Result, t.slots)
	}
	depth := lim.MaxDepth
	if depth <= 0 {
		depth = ingest.DefaultLimits.MaxDepth
	}
	var kept [8][2]string
	unknown, size, driftErr := t.scan(obj, got, kept[:0], depth, fail)
	var ts time.Time
	if r.Time != "" {
		v := t.value(obj, got, t.timeSlot, r.Time)
		if !v.Exists() {
			return fail(timeName, r.Time, "no time there")
		}
		var err error
		if ts, err = parseTime(v, r.TimeFormat); err != nil {
			return fail(timeName, r.Time, "%v", err)
		}
	}
	*rd = ingest.Reading{DeviceID: device, Time: ts, ReceivedAt: receivedAt}
	rd.Normalize()
	if err := rd.Validate(lim); err != nil {
		column, path := "", ""
		var fe *ingest.FieldError
		if errors.As(err, &fe) {
			switch fe.Field {
			case "ts":
				column, path = timeName, r.Time
			case "device_id":
				path = r.Device
			}
		}
		return fail(column, path, "%v", err)
	}
	vals := make([]typed.Value, len(t.shape.Columns))
	for i := range t.cols {
		c, v := &t.cols[i], &vals[i]
		switch c.from {
		case fromDevice:
			v.Str = device
		case fromCapture:
			v.Str = caps[c.capture]
			if err := checkText(v.Str); err != nil {
				return fail(c.name, "", "capture %q: %v", c.capture, err)
			}
		case fromTime:
			*v = typed.TimeValue(rd.Time)
		case fromReceived:
			*v = typed.TimeValue(rd.ReceivedAt)
		case fromID:
			v.Str = id
			if err := checkText(id); err != nil {
				return fail(c.name, r.ID, "the message id: %v", err)
			}
		case fromPath:
			j := t.value(obj, got, c.slot, c.path)
			if !j.Exists() || j.Type == gjson.Null {
				if c.required {
					return fail(c.name, c.path, "required, and the message has %s there", describe(j))
				}
				v.Null = true
				continue
			}
			if err := convert(j, c.typ, depth, v); err != nil {
				return fail(c.name, c.path, "%s: %v", c.typ, err)
			}
		}
	}
	if t.unknown != UnknownIgnore {
		if driftErr != nil {
			return driftErr
		}
		if err := t.keep(unknown, size, vals, lim.MaxPayload, fail); err != nil {
			return err
		}
	}
	rd.Row = &typed.Row{Shape: t.shape, Values: vals}
	rd.Series = t.seriesOf(vals)
	return nil
}

// scan reads obj's fields in one pass: into got[slot] the first of each
// slotted field (see table.fields), and the unknown ones unless the policy
// ignores them. UnknownRefuse refuses the first (err); UnknownKeep checks
// each as jsonb (values nested at most depth-1 deep: err is the first that
// is not) and appends its raw key and value to kept, returned with the
// size of the object they make, to write it in one allocation of its size
// (mapRow's kept is an array of 8: a message rarely has more).
func (t *table) scan(obj gjson.Result, got []gjson.Result, kept [][2]string, depth int, fail func(column, path, format string, args ...any) error) (
	fields [][2]string, size int, err error) {
	fields, size = kept, 1 // {
	if len(got) == 0 && t.unknown == UnknownIgnore {
		return fields, size, nil
	}
	extra := ""
	if t.extra >= 0 {
		extra = t.shape.Columns[t.extra].Name
	}
	obj.ForEach(func(k, v gjson.Result) bool {
		if slot, known := t.fields[k.Str]; known {
			if slot >= 0 && !got[slot].Exists() {
				got[slot] = v
			}
			return true
		}
		if t.unknown == UnknownIgnore || err != nil {
			return true
		}
		if t.unknown == UnknownRefuse {
			err = fail("", escapePath(k.Str), "unknown field %q: no column reads it, and the rule refuses unknown fields (unknown: refuse)", k.Str)
			return true
		}
		for _, s := range []string{k.Raw, v.Raw} {
			if cerr := ingest.CheckJSON(unsafeBytes(s), max(depth-1, 1)); cerr != nil {
				err = fail(extra, escapePath(k.Str), "unknown field %q: %s", k.Str, fieldMsg(cerr))
				return true
			}
		}
		fields = append(fields, [2]string{k.Raw, v.Raw})
		size += len(k.Raw) + len(v.Raw) + 2 // :, and , or }
		return true
	})
	return fields, size, err
}

// value is the value of path in obj: the one scan found in its slot, or
// (slot -1) GJSON's.
func (t *table) value(obj gjson.Result, got []gjson.Result, slot int, path string) gjson.Result {
	if slot >= 0 {
		return got[slot]
	}
	return obj.Get(path)
}

// keep puts the unknown fields scan kept (UnknownKeep), of an object of
// size bytes, in the extra column of vals as a compact JSON object (NULL
// without any), at most maxPayload bytes.
func (t *table) keep(fields [][2]string, size int, vals []typed.Value, maxPayload int, fail func(column, path, format string, args ...any) error) error {
	if t.extra < 0 {
		return nil
	}
	extra := t.shape.Columns[t.extra].Name
	if len(fields) == 0 {
		vals[t.extra].Null = true
		return nil
	}
	var sb strings.Builder
	sb.Grow(size)
	for i, f := range fields {
		if i == 0 {
			sb.WriteByte('{')
		} else {
			sb.WriteByte(',')
		}
		sb.WriteString(f[0])
		sb.WriteByte(':')
		writeCompact(&sb, f[1])
	}
	sb.WriteByte('}')
	if maxPayload <= 0 {
		maxPayload = ingest.DefaultLimits.MaxPayload
	}
	if sb.Len() > maxPayload {
		return fail(extra, "", "the unknown fields take %d bytes, more than the limit of %d", sb.Len(), maxPayload)
	}
	vals[t.extra].Str = sb.String()
	return nil
}

// seriesOf is the Series of a row of the table with vals (see
// ingest.Reading.Series), in seriesOf's encoding of tags: an empty name
// (no tag has one) and the table's name, then each identity column's name
// and value (appendKeyValue). Rows of two tables never share one.
func (t *table) seriesOf(vals []typed.Value) []byte {
	if len(t.identity) == 0 {
		return t.series
	}
	b := make([]byte, len(t.series), len(t.series)+24*len(t.identity))
	copy(b, t.series)
	for _, i := range t.identity {
		c := &t.shape.Columns[i]
		b = appendKeyPart(b, c.Name)
		b = appendKeyValue(b, &vals[i], c.Type)
	}
	return b
}

// appendKeyPart appends s, length-prefixed.
func appendKeyPart(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendKeyValue appends v, a value of type typ, length-prefixed: "n" for
// NULL, else 'v' and the value (text, numeric and jsonb as they are,
// numbers in decimal, booleans t or f, an array's elements each
// length-prefixed or 8 bytes).
func appendKeyValue(b []byte, v *typed.Value, typ typed.Type) []byte {
	if v.Null {
		return appendKeyPart(b, "n")
	}
	var tmp [32]byte
	repr := append(tmp[:0], 'v')
	switch typ {
	case typed.Text, typed.Numeric, typed.JSONB:
		b = binary.AppendUvarint(b, uint64(1+len(v.Str)))
		b = append(b, 'v')
		return append(b, v.Str...)
	case typed.Boolean:
		repr = append(repr, "f"...)
		if v.Bool {
			repr[1] = 't'
		}
	case typed.Smallint, typed.Integer, typed.Bigint, typed.Timestamptz:
		repr = strconv.AppendInt(repr, v.Int, 10)
	case typed.Real, typed.Double:
		repr = strconv.AppendFloat(repr, v.Float, 'g', -1, 64)
	case typed.DoubleArray:
		for _, f := range v.Floats() {
			repr = binary.LittleEndian.AppendUint64(repr, math.Float64bits(f))
		}
	case typed.TextArray:
		for _, s := range v.Strs() {
			repr = appendKeyPart(repr, s)
		}
	}
	b = binary.AppendUvarint(b, uint64(len(repr)))
	return append(b, repr...)
}

// convert reads j, a JSON value neither missing nor null, into v as a value
// of type typ, or says why it does not fit; jsonb nests at most depth deep.
func convert(j gjson.Result, typ typed.Type, depth int, v *typed.Value) error {
	switch typ {
	case typed.Text:
		if j.Type != gjson.String {
			return fmt.Errorf("want a string, found %s", describe(j))
		}
		v.Str = j.Str
		return checkText(j.Str)
	case typed.Boolean:
		if j.Type != gjson.True && j.Type != gjson.False {
			return fmt.Errorf("want true or false, found %s", describe(j))
		}
		v.Bool = j.Type == gjson.True
	case typed.Smallint, typed.Integer, typed.Bigint:
		if j.Type != gjson.Number {
			return fmt.Errorf("want an integer, found %s", describe(j))
		}
		n, err := parseInteger(j.Raw, typ)
		if err != nil {
			return err
		}
		v.Int = n
	case typed.Real, typed.Double:
		if j.Type != gjson.Number {
			return fmt.Errorf("want a number, found %s", describe(j))
		}
		f, err := parseFloat(j.Raw, typ)
		if err != nil {
			return err
		}
		v.Float = f
	case typed.Numeric:
		if j.Type != gjson.Number {
			return fmt.Errorf("want a number, found %s", describe(j))
		}
		if _, exp := splitExponent(j.Raw); exp > maxExponent || exp < -maxExponent {
			return fmt.Errorf("%.40s: the exponent is beyond ±%d", j.Raw, maxExponent)
		}
		v.Str = j.Raw
	case typed.Timestamptz:
		t, err := parseTime(j, "")
		if err != nil {
			return err
		}
		if y := t.Year(); y < 1678 || y > 2261 {
			return fmt.Errorf("%s is outside the years 1678 to 2261 that can be stored", t.UTC().Format(time.RFC3339))
		}
		*v = typed.TimeValue(t)
	case typed.JSONB:
		s := compact(j.Raw)
		if err := ingest.CheckJSON(unsafeBytes(s), depth); err != nil {
			return errors.New(fieldMsg(err))
		}
		v.Str = s
	case typed.DoubleArray:
		if !j.IsArray() {
			return fmt.Errorf("want an array of numbers, found %s", describe(j))
		}
		var err error
		fs := []float64{}
		j.ForEach(func(_, e gjson.Result) bool {
			if e.Type != gjson.Number {
				err = fmt.Errorf("element %d: want a number, found %s", len(fs), describe(e))
				return false
			}
			f, ferr := parseFloat(e.Raw, typed.Double)
			if ferr != nil {
				err = fmt.Errorf("element %d: %v", len(fs), ferr)
				return false
			}
			fs = append(fs, f)
			return true
		})
		*v = typed.FloatsValue(fs)
		return err
	case typed.TextArray:
		if !j.IsArray() {
			return fmt.Errorf("want an array of strings, found %s", describe(j))
		}
		var err error
		ss := []string{}
		j.ForEach(func(_, e gjson.Result) bool {
			if e.Type != gjson.String {
				err = fmt.Errorf("element %d: want a string, found %s", len(ss), describe(e))
			} else if terr := checkText(e.Str); terr != nil {
				err = fmt.Errorf("element %d: %v", len(ss), terr)
			}
			if err != nil {
				return false
			}
			ss = append(ss, e.Str)
			return true
		})
		*v = typed.StrsValue(ss)
		return err
	default:
		return fmt.Errorf("no conversion to %s", typ) // compile allows none other
	}
	return nil
}

// checkText refuses what PostgreSQL's text cannot hold: invalid UTF-8 and
// the NUL character (a JSON string's \u0000).
func checkText(s string) error {
	if !utf8.ValidString(s) {
		return errors.New("not valid UTF-8")
	}
	if strings.IndexByte(s, 0) >= 0 {
		return errors.New(`holds \u0000, which PostgreSQL text cannot store`)
	}
	return nil
}

// intRange is the range of an integer type.
func intRange(typ typed.Type) (lo, hi int64) {
	switch typ {
	case typed.Smallint:
		return math.MinInt16, math.MaxInt16
	case typed.Integer:
		return math.MinInt32, math.MaxInt32
	}
	return math.MinInt64, math.MaxInt64
}

// parseInteger reads the JSON number raw as an integer of typ: integral
// (1.0 and 1e3 are, 1.5 is not) and within typ's range.
func parseInteger(raw string, typ typed.Type) (int64, error) {
	lo, hi := intRange(typ)
	outside := func() error { return fmt.Errorf("%.40s is out of range (%d to %d)", raw, lo, hi) }
	n, err := strconv.ParseInt(raw, 10, 64)
	if err != nil {
		var fits bool
		if n, fits, err = exactInteger(raw); err != nil {
			return 0, err
		}
		if !fits {
			return 0, outside()
		}
	}
	if n < lo || n > hi {
		return 0, outside()
	}
	return n, nil
}

// exactInteger reads the JSON number raw, which strconv.ParseInt does not
// (1.0, 1e3, or beyond int64), exactly: its value and whether an int64
// holds it, or an error if it is not an integer.
func exactInteger(raw string) (n int64, fits bool, err error) {
	mant, exp := splitExponent(raw)
	if exp > 400 || exp < -400 {
		switch {
		case zeroDigits(mant):
			return 0, true, nil
		case exp > 0:
			return 0, false, nil
		}
		return 0, false, fmt.Errorf("%.40s is not an integer", raw)
	}
	var q big.Rat
	if _, ok := q.SetString(raw); !ok {
		return 0, false, fmt.Errorf("%.40s is not a number", raw)
	}
	if !q.IsInt() {
		return 0, false, fmt.Errorf("%.40s is not an integer", raw)
	}
	if !q.Num().IsInt64() {
		return 0, false, nil
	}
	return q.Num().Int64(), true, nil
}

// splitExponent splits a JSON number into its mantissa and exponent; an
// exponent beyond an int is math.MaxInt or math.MinInt.
func splitExponent(raw string) (mant string, exp int) {
	i := strings.IndexAny(raw, "eE")
	if i < 0 {
		return raw, 0
	}
	e, err := strconv.Atoi(raw[i+1:])
	if err != nil { // valid JSON: only too many digits
		e = math.MaxInt
		if strings.HasPrefix(raw[i+1:], "-") {
			e = math.MinInt
		}
	}
	return raw[:i], e
}

// zeroDigits reports whether every digit of the mantissa mant is 0.
func zeroDigits(mant string) bool {
	return strings.Trim(mant, "-+.0") == ""
}

// parseFloat reads the JSON number raw as a real or double precision:
// finite, within the type's range, and not so small that it would round
// to zero (PostgreSQL refuses such input).
func parseFloat(raw string, typ typed.Type) (float64, error) {
	f, err := strconv.ParseFloat(raw, 64)
	mant, _ := splitExponent(raw)
	bad := err != nil || math.IsInf(f, 0) || f == 0 && !zeroDigits(mant)
	if typ == typed.Real {
		bad = bad || math.Abs(f) > math.MaxFloat32 || f != 0 && float32(f) == 0
	}
	if bad {
		return 0, fmt.Errorf("%.40s is out of the range of %s", raw, typ)
	}
	return f, nil
}

// fieldMsg is err's message without its field, for a *ingest.FieldError.
func fieldMsg(err error) string {
	var fe *ingest.FieldError
	if errors.As(err, &fe) {
		return fe.Msg
	}
	return err.Error()
}

// unsafeBytes is s as a byte slice without a copy, for functions that only
// read it.
func unsafeBytes(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}
