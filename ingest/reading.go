package ingest

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"firehose/typed"
)

// ErrInvalidReading is wrapped by every validation error: a reading that fails
// validation is refused at the edge and never reaches a stream. Use errors.As
// with *FieldError to learn which field was wrong.
var ErrInvalidReading = errors.New("invalid reading")

// Reading is one measurement from one device, as it travels from an edge to
// PostgreSQL.
type Reading struct {
	// DeviceID names the device: 1 to Limits.MaxDeviceID bytes of printable
	// UTF-8 without spaces or the MQTT topic characters '/', '+' and '#'.
	DeviceID string
	// Time is when the device measured the value. The zero Time means "not
	// given"; Normalize sets it to ReceivedAt.
	Time time.Time
	// ReceivedAt is when an edge of firehose received the reading.
	ReceivedAt time.Time
	// Metric names what Value measures ("temp", "pressure"); "" is the
	// default metric, DefaultMetric, which a message of one value lands as.
	// Many readings of one message share DeviceID, Time and ReceivedAt and
	// differ by Metric.
	Metric string
	// Value is the numeric reading; it must be finite.
	Value float64
	// Payload holds the reading's extra fields as a compact JSON object, or is
	// nil when there are none.
	Payload []byte
	// ID identifies the reading for deduplication (--dedup id): the id of
	// the message it came in, told apart from the message's other readings
	// by position (NameRows). It travels no further than the producer,
	// which remembers a key made of it; "" has none.
	ID string
	// Series names the reading's series beyond DeviceID and Metric, for
	// deduplication: what else tells two devices' or two series' readings
	// apart although they share a device id — the tags a mapping rule
	// captured from the topic, the seed's id on /readings/fast. Two readings
	// whose Series differ are never the same reading under --dedup. Like
	// ID it travels no further than the producer; nil has none.
	Series []byte
	// Row, when set, makes the reading a row of a typed table (a mapping
	// rule's table) instead of a row of readings: Metric, Value and
	// Payload are unused, DeviceID still picks the shard and Time is the
	// row's time column.
	Row *typed.Row

	// checked records that the pass that read Payload (ParseObject,
	// CheckPayload) found it clean, and how deep it nests, so that
	// Validate does not read it again.
	checked payloadCheck
}

// DefaultMetric is the metric of a reading that names none: the field a
// single-value message carries its value in ({"reading": 21.5}). The
// readings table's metric column defaults to it.
const DefaultMetric = "reading"

// MaxMetric is the longest metric name in bytes.
const MaxMetric = 255

// Limits bound what a valid reading may hold. The zero value of a field means
// the default in DefaultLimits.
type Limits struct {
	// MaxDeviceID is the longest device id in bytes. Default 128.
	MaxDeviceID int
	// MaxPayload is the largest Payload in bytes. Default 16 KiB.
	MaxPayload int
	// MaxDepth is the deepest nesting of objects and arrays in Payload.
	// Default 16.
	MaxDepth int
	// MaxAge is how far before ReceivedAt a measured time may lie. Default one
	// year: devices that buffer offline for longer must be re-provisioned.
	MaxAge time.Duration
	// MaxSkew is how far after ReceivedAt a measured time may lie (device
	// clocks run fast). Default one hour.
	MaxSkew time.Duration
	// DeviceSlash lets device ids hold '/': those that do not name one topic
	// level, such as Sparkplug B's group/edge_node/device.
	DeviceSlash bool
	// Retained, when set, bounds MaxAge further by the deployment's
	// retention (see AgeBound): a reading older than that would be deleted
	// by partition maintenance, so it is refused. Every copy of the Limits
	// shares it, and the bound may change while edges run.
	Retained *AgeBound
}

// AgeBound is the oldest age a reading may have so that the deployment's
// retention does not delete it (its retention minus one partition
// interval, see RetentionSettings.MaxAge); 0, the zero value, bounds
// nothing. It is safe for concurrent use.
type AgeBound struct {
	max       atomic.Int64 // time.Duration
	retention atomic.Int64 // time.Duration, for the message
}

// Set makes maxAge the bound, derived from retention (0, 0: none).
func (b *AgeBound) Set(maxAge, retention time.Duration) {
	b.retention.Store(int64(retention))
	b.max.Store(int64(maxAge))
}

// Get returns the bound and the retention it comes from; 0 when none.
func (b *AgeBound) Get() (maxAge, retention time.Duration) {
	if b == nil {
		return 0, 0
	}
	return time.Duration(b.max.Load()), time.Duration(b.retention.Load())
}

// DefaultLimits are the limits used where none are configured.
var DefaultLimits = Limits{
	MaxDeviceID: 128,
	MaxPayload:  16 << 10,
	MaxDepth:    16,
	MaxAge:      365 * 24 * time.Hour,
	MaxSkew:     time.Hour,
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	d.DeviceSlash = l.DeviceSlash
	d.Retained = l.Retained
	if l.MaxDeviceID > 0 {
		d.MaxDeviceID = l.MaxDeviceID
	}
	if l.MaxPayload > 0 {
		d.MaxPayload = l.MaxPayload
	}
	if l.MaxDepth > 0 {
		d.MaxDepth = l.MaxDepth
	}
	if l.MaxAge > 0 {
		d.MaxAge = l.MaxAge
	}
	if l.MaxSkew > 0 {
		d.MaxSkew = l.MaxSkew
	}
	return d
}

// FieldError says which field of a reading is wrong and why. It wraps
// ErrInvalidReading.
type FieldError struct {
	// Field is the name of the field as the client spelled it ("device_id",
	// "reading", "ts", or an extra field's name).
	Field string
	// Msg says what is wrong, in words a client can act on.
	Msg string
	// Type is a short machine-readable kind ("missing", "type", "range",
	// "format", "too_long").
	Type string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Unwrap makes errors.Is(err, ErrInvalidReading) true.
func (e *FieldError) Unwrap() error { return ErrInvalidReading }

func fieldErr(field, typ, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Type: typ, Msg: fmt.Sprintf(format, args...)}
}

// Normalize fills what a client may leave out: a zero Time becomes ReceivedAt.
// Times are kept in UTC.
func (r *Reading) Normalize() {
	if r.Time.IsZero() {
		r.Time = r.ReceivedAt
	}
	r.Time = r.Time.UTC()
	r.ReceivedAt = r.ReceivedAt.UTC()
}

// Validate checks r against lim (zero fields take their defaults) and returns
// a *FieldError wrapping ErrInvalidReading for the first problem found. It
// expects Normalize to have run.
func (r *Reading) Validate(lim Limits) error {
	lim = lim.withDefaults()
	if err := validateDeviceID(r.DeviceID, lim.MaxDeviceID, lim.DeviceSlash); err != nil {
		return err
	}
	if r.Row != nil {
		// A typed row's values were checked against their columns by the
		// rule that made it; Metric, Value and Payload are unused.
		if err := CheckRow(r.Row); err != nil {
			return err
		}
	} else {
		if err := ValidateMetric(r.Metric); err != nil {
			return err
		}
		if math.IsNaN(r.Value) || math.IsInf(r.Value, 0) {
			return fieldErr("reading", "range", "must be a finite number")
		}
	}
	if r.ReceivedAt.IsZero() {
		return fieldErr("received_at", "missing", "time of receipt is not set")
	}
	if bound, retention := lim.Retained.Get(); bound > 0 && bound < lim.MaxAge && r.Time.Before(r.ReceivedAt.Add(-bound)) {
		return fieldErr("ts", "range", "%s is more than %s before the time of receipt: the deployment keeps readings for %s (--retention), and one this old could be deleted before it is stored",
			r.Time.Format(time.RFC3339), bound, retention)
	}
	if r.Time.Before(r.ReceivedAt.Add(-lim.MaxAge)) {
		return fieldErr("ts", "range", "%s is more than %s before the time of receipt", r.Time.Format(time.RFC3339), lim.MaxAge)
	}
	if r.Time.After(r.ReceivedAt.Add(lim.MaxSkew)) {
		return fieldErr("ts", "range", "%s is more than %s after the time of receipt", r.Time.Format(time.RFC3339), lim.MaxSkew)
	}
	if y := r.Time.Year(); y < 1678 || y > 2261 {
		// The stream encoding holds Unix nanoseconds in an int64.
		return fieldErr("ts", "range", "%s is outside the years 1678 to 2261 that can be stored", r.Time.Format(time.RFC3339))
	}
	if r.Payload != nil && r.Row == nil {
		if len(r.Payload) > lim.MaxPayload {
			return fieldErr("payload", "too_long", "extra fields take %d bytes, more than the limit of %d", len(r.Payload), lim.MaxPayload)
		}
		if err := r.checkPayload(lim.MaxDepth); err != nil {
			return err
		}
	}
	return nil
}

// CheckRow checks the frame of a typed row, as the stream carries it and
// COPY needs it: a table, at least one column, a value for each, and
// table and column names that are PostgreSQL identifiers ([a-z_][a-z0-9_]*,
// at most 63 bytes), no column twice. It does not check the values against
// their types (the mapping rule that made the row did). Errors are
// *FieldError wrapping ErrInvalidReading, Field "row".
func CheckRow(row *typed.Row) error {
	switch {
	case row.Shape == nil:
		return fieldErr("row", "missing", "has no table")
	case !identifier(row.Shape.Table):
		return fieldErr("row", "format", "table %q is not a PostgreSQL identifier ([a-z_][a-z0-9_]*, at most 63 bytes)", row.Shape.Table)
	case len(row.Shape.Columns) == 0:
		return fieldErr("row", "missing", "table %s: no columns", row.Shape.Table)
	case len(row.Values) != len(row.Shape.Columns):
		return fieldErr("row", "format", "table %s: %d values for %d columns", row.Shape.Table, len(row.Values), len(row.Shape.Columns))
	}
	cols := row.Shape.Columns
	// A table of a few columns (most) is checked for a column twice
	// without a map: each row of a batch is checked, and a map per row
	// was most of the bridge's allocations for a typed row.
	var seen map[string]struct{}
	if len(cols) > smallShape {
		seen = make(map[string]struct{}, len(cols))
	}
	for i, c := range cols {
		if !identifier(c.Name) {
			return fieldErr("row", "format", "table %s: column %q is not a PostgreSQL identifier ([a-z_][a-z0-9_]*, at most 63 bytes)", row.Shape.Table, c.Name)
		}
		dup := false
		if seen == nil {
			dup = slices.ContainsFunc(cols[:i], func(d typed.Column) bool { return d.Name == c.Name })
		} else {
			_, dup = seen[c.Name]
			seen[c.Name] = struct{}{}
		}
		if dup {
			return fieldErr("row", "format", "table %s: column %s twice", row.Shape.Table, c.Name)
		}
	}
	return nil
}

// smallShape is the most columns CheckRow compares pairwise.
const smallShape = 32

// identifier reports whether s is a PostgreSQL identifier that needs no
// quoting: [a-z_][a-z0-9_]*, 1 to 63 bytes.
func identifier(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_' || c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// ValidateDeviceID checks a device id: 1 to max bytes of valid UTF-8, no
// control or space characters, and none of '/', '+', '#' (so that the id is one
// MQTT topic level). max <= 0 means DefaultLimits.MaxDeviceID.
func ValidateDeviceID(id string, max int) error {
	return validateDeviceID(id, max, false)
}

// validateDeviceID is ValidateDeviceID, with slash allowing '/' inside an id
// (not at either end, and not twice in a row).
func validateDeviceID(id string, max int, slash bool) error {
	if max <= 0 {
		max = DefaultLimits.MaxDeviceID
	}
	switch {
	case id == "":
		return fieldErr("device_id", "missing", "must not be empty")
	case len(id) > max:
		return fieldErr("device_id", "too_long", "is %d bytes long, more than the limit of %d", len(id), max)
	case !utf8.ValidString(id):
		return fieldErr("device_id", "format", "is not valid UTF-8")
	}
	if slash && (strings.HasPrefix(id, "/") || strings.HasSuffix(id, "/") || strings.Contains(id, "//")) {
		return fieldErr("device_id", "format", "must not start or end with '/' or hold an empty level")
	}
	for _, c := range id {
		switch {
		case c == '/' && slash:
		case c == '/' || c == '+' || c == '#':
			return fieldErr("device_id", "format", "must not contain %q (it is one MQTT topic level)", c)
		case c > ' ' && c < 0x7f:
			// Printable ASCII but the space: most ids are only that, and
			// each reading's is checked.
		case unicode.IsControl(c) || unicode.IsSpace(c) || !unicode.IsPrint(c):
			return fieldErr("device_id", "format", "must not contain control or space characters (found %U)", c)
		}
	}
	return nil
}

// ValidateMetric checks a metric name: "" (the default metric) or up to
// MaxMetric bytes of valid UTF-8 without control characters. Names may hold
// spaces and '/' ("Node Control/Rebirth" is a Sparkplug metric).
func ValidateMetric(name string) error {
	switch {
	case len(name) > MaxMetric:
		return fieldErr("metric", "too_long", "is %d bytes long, more than the limit of %d", len(name), MaxMetric)
	case !utf8.ValidString(name):
		return fieldErr("metric", "format", "is not valid UTF-8")
	}
	for _, c := range name {
		if unicode.IsControl(c) || !unicode.IsPrint(c) && c != ' ' {
			return fieldErr("metric", "format", "must not contain control characters (found %U)", c)
		}
	}
	return nil
}

// NameRows gives the readings of one message the message's id: the id
// itself for a message of one reading, else the id and the reading's
// position ("id#2"), so that a resend of the same message names each row
// as before. An empty id changes nothing.
func NameRows(rs []Reading, id string) {
	if id == "" {
		return
	}
	if len(rs) == 1 {
		rs[0].ID = id
		return
	}
	for i := range rs {
		rs[i].ID = id + "#" + strconv.Itoa(i)
	}
}
