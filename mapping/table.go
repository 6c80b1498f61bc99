package mapping

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"firehose/typed"
)

// maxIdentifier is PostgreSQL's longest identifier in bytes (NAMEDATALEN-1).
const maxIdentifier = 63

// validIdentifier reports whether s is an identifier DDL can use unquoted:
// [a-z_][a-z0-9_]*, at most maxIdentifier bytes.
func validIdentifier(s string) bool {
	if s == "" || len(s) > maxIdentifier {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '_' || c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// reservedTable reports whether name is one of firehose's own tables or
// could be one of their partitions.
func reservedTable(name string) bool {
	return name == "readings" || strings.HasPrefix(name, "readings_") ||
		strings.HasPrefix(name, "bridge_") || strings.HasPrefix(name, "firehose_")
}

// source is where a column's value comes from.
type source uint8

const (
	fromPath source = iota
	fromCapture
	fromDevice
	fromTime
	fromReceived
	fromID
)

// column is a compiled ColumnRule.
type column struct {
	name     string
	typ      typed.Type
	from     source
	capture  string // fromCapture
	path     string // fromPath
	required bool
	// slot is where mapRow's pass over the object puts the value of a
	// plain path (plainPath); -1 when the path is read by itself.
	slot int
}

// table is the compiled table part of a rule.
type table struct {
	// shape is what the rule's rows fill: the declared columns, then the
	// extra column with UnknownKeep. New gives the rules naming one table
	// one shape.
	shape *typed.Shape
	cols  []column // the declared columns
	// timeCol is the index of the source: time column.
	timeCol int
	// extra is the index of the extra column in shape, -1 without.
	extra   int
	unknown string
	// identity are the indexes of the identity columns, in their order.
	identity []int
	// fields are the top-level fields of the object a row is read from
	// (the message, or a sample) that are not unknown: a path's first
	// field, the time's, and (without samples) the device's and the id's.
	// A field a plain path reads has a slot (>= 0, fewer than slots): mapRow
	// reads every slotted field in one pass over the object, the pass that
	// finds the unknown ones; the others are -1.
	fields map[string]int
	slots  int
	// timeSlot is the slot of the time's field, -1 when the time's path is
	// not plain (or the rule reads no time).
	timeSlot int
	// series is the start of every row's Series: the table's name.
	series []byte
	// decl is the table as Tables reports it.
	decl typed.Table
}

// specError is a rule that cannot work, at one of its columns or indexes
// (-1: neither), so that a YAML file can name the line.
type specError struct {
	msg           string
	column, index int
}

func (e *specError) Error() string { return e.msg }

// compileTable checks the table part of r (whose topic compiled to levels)
// and prepares it.
func compileTable(r Rule, levels []level) (*table, error) {
	bad := func(format string, args ...any) error {
		return &specError{msg: fmt.Sprintf("rule %q: ", r.Name) + fmt.Sprintf(format, args...), column: -1, index: -1}
	}
	badCol := func(i int, format string, args ...any) error {
		what := fmt.Sprintf("columns[%d]", i)
		if n := r.Columns[i].Name; n != "" {
			what = fmt.Sprintf("column %q", n)
		}
		return &specError{msg: fmt.Sprintf("rule %q: %s: ", r.Name, what) + fmt.Sprintf(format, args...), column: i, index: -1}
	}
	badIndex := func(i int, format string, args ...any) error {
		return &specError{msg: fmt.Sprintf("rule %q: indexes[%d]: ", r.Name, i) + fmt.Sprintf(format, args...), column: -1, index: i}
	}
	switch {
	case !validIdentifier(r.Table):
		return nil, bad("table %q: want a PostgreSQL identifier, [a-z_][a-z0-9_]* of at most %d bytes", r.Table, maxIdentifier)
	case reservedTable(r.Table):
		return nil, bad("table %q: readings, readings_*, bridge_* and firehose_* are firehose's own tables", r.Table)
	case len(r.Metrics) > 0 || len(r.Exclude) > 0 || r.Payload != "":
		return nil, bad("metrics, exclude and payload do not apply to a rule with a table: its columns say what goes where")
	case len(r.Columns) == 0:
		return nil, bad("table %q has no columns: list them (name, type, and one of source, capture or path)", r.Table)
	}
	t := &table{timeCol: -1, extra: -1, unknown: cmp.Or(r.Unknown, UnknownKeep), fields: map[string]int{}, timeSlot: -1}
	switch t.unknown {
	case UnknownKeep, UnknownIgnore, UnknownRefuse:
	default:
		return nil, bad("unknown %q: want keep, ignore or refuse", r.Unknown)
	}
	if r.Extra != "" && t.unknown != UnknownKeep {
		return nil, bad("extra names the column unknown: keep fills, and unknown is %s", t.unknown)
	}
	captures := map[string]bool{}
	for _, l := range levels {
		if l.capture != "" {
			captures[l.capture] = true
		}
	}
	shape := &typed.Shape{Table: r.Table}
	index := map[string]int{} // column name -> its index in shape
	for i, cr := range r.Columns {
		if !validIdentifier(cr.Name) {
			return nil, badCol(i, "name %q: want a PostgreSQL identifier, [a-z_][a-z0-9_]* of at most %d bytes", cr.Name, maxIdentifier)
		}
		if _, dup := index[cr.Name]; dup {
			return nil, badCol(i, "declared twice")
		}
		index[cr.Name] = i
		typ, err := typed.ParseType(cr.Type)
		if err != nil {
			return nil, badCol(i, "%v", err)
		}
		n := 0
		for _, s := range []string{cr.Source, cr.Capture, cr.Path} {
			if s != "" {
				n++
			}
		}
		if n != 1 {
			return nil, badCol(i, "give exactly one of source (device, time, received or id), capture (a topic capture) or path (a GJSON path)")
		}
		c := column{name: cr.Name, typ: typ, capture: cr.Capture, path: cr.Path, required: cr.Required, slot: -1}
		var want typed.Type // what the source or capture holds
		switch {
		case cr.Path != "":
			c.from = fromPath
			c.slot = t.field(cr.Path)
		case cr.Capture != "":
			c.from, want = fromCapture, typed.Text
			switch {
			case cr.Capture == deviceCapture:
				return nil, badCol(i, "the device is source: device, not capture: %s", deviceCapture)
			case r.Topic == "":
				return nil, badCol(i, "capture %q: the rule has no topic to capture from", cr.Capture)
			case !captures[cr.Capture]:
				return nil, badCol(i, "capture %q: the topic %q captures no {%s}", cr.Capture, r.Topic, cr.Capture)
			}
		default:
			switch cr.Source {
			case SourceDevice:
				c.from, want = fromDevice, typed.Text
			case SourceTime:
				c.from, want = fromTime, typed.Timestamptz
				if t.timeCol >= 0 {
					return nil, badCol(i, "a second source: time column (the first is %q): a table has one time column", r.Columns[t.timeCol].Name)
				}
				t.timeCol = i
			case SourceReceived:
				c.from, want = fromReceived, typed.Timestamptz
			case SourceID:
				c.from, want = fromID, typed.Text
				if r.ID == "" {
					return nil, badCol(i, "source: id needs the rule's id, the path of the message id")
				}
			default:
				return nil, badCol(i, "source %q: want device, time, received or id", cr.Source)
			}
		}
		if want != 0 && typ != want {
			what := "capture " + cr.Capture
			if cr.Source != "" {
				what = "source " + cr.Source
			}
			return nil, badCol(i, "%s is of type %s, not %s", what, want, typ)
		}
		t.cols = append(t.cols, c)
		shape.Columns = append(shape.Columns, typed.Column{Name: cr.Name, Type: typ, NotNull: cr.Required || c.from == fromTime})
	}
	if t.timeCol < 0 {
		return nil, bad("no time column: give one column source: time of type timestamptz, the table's partition key")
	}
	if t.unknown == UnknownKeep {
		name := cmp.Or(r.Extra, DefaultExtra)
		if !validIdentifier(name) {
			return nil, bad("extra %q: want a PostgreSQL identifier, [a-z_][a-z0-9_]* of at most %d bytes", name, maxIdentifier)
		}
		if _, dup := index[name]; dup {
			return nil, bad("extra column %q: a declared column has that name; name the column of unknown fields with extra:, or say unknown: ignore", name)
		}
		t.extra = len(shape.Columns)
		index[name] = t.extra
		shape.Columns = append(shape.Columns, typed.Column{Name: name, Type: typed.JSONB})
	}
	if r.Time != "" {
		t.timeSlot = t.field(r.Time)
	}
	if r.Samples == "" {
		// The fields of the message the device and the id are read from;
		// with samples they are not fields of a sample.
		for _, p := range []string{r.Device, r.ID} {
			if p != "" {
				t.know(topField(p)) // Map reads them
			}
		}
	}
	for _, name := range r.Identity {
		i, ok := index[name]
		switch {
		case !ok || i == t.extra:
			return nil, bad("identity %q: no such column", name)
		case slices.Contains(t.identity, i):
			return nil, bad("identity %q: listed twice", name)
		case t.cols[i].from == fromReceived:
			return nil, bad("identity %q: the time of receipt differs on every resend, it names no series", name)
		}
		t.identity = append(t.identity, i)
	}
	t.decl = typed.Table{Name: r.Table, Rule: r.Name, Columns: shape.Columns, TimeColumn: r.Columns[t.timeCol].Name}
	for k, ir := range r.Indexes {
		if len(ir.Columns) == 0 {
			return nil, badIndex(k, "no columns")
		}
		ix := typed.Index{Unique: ir.Unique}
		for _, name := range ir.Columns {
			if _, ok := index[name]; !ok {
				return nil, badIndex(k, "column %q: no such column", name)
			}
			if slices.Contains(ix.Columns, name) {
				return nil, badIndex(k, "column %q listed twice", name)
			}
			ix.Columns = append(ix.Columns, name)
		}
		if ix.Unique && !slices.Contains(ix.Columns, t.decl.TimeColumn) {
			// PostgreSQL requires the partition key in a unique index of
			// a partitioned table.
			ix.Columns = append(ix.Columns, t.decl.TimeColumn)
		}
		for j, other := range t.decl.Indexes {
			if other.Unique == ix.Unique && slices.Equal(other.Columns, ix.Columns) {
				return nil, badIndex(k, "the same index as indexes[%d]", j)
			}
		}
		t.decl.Indexes = append(t.decl.Indexes, ix)
	}
	t.shape = shape
	t.series = appendKeyPart(nil, "")
	t.series = slices.Clip(appendKeyPart(t.series, r.Table)) // shared by rows: an append must copy
	return t, nil
}

// field records the top-level field path reads as known, and returns the
// slot of its value when path is plain (one field, read in mapRow's pass
// over the object), else -1.
func (t *table) field(path string) int {
	if !plainPath(path) {
		t.know(topField(path))
		return -1
	}
	if slot, ok := t.fields[path]; ok && slot >= 0 {
		return slot // another column, or the time, reads it too
	}
	t.fields[path] = t.slots
	t.slots++
	return t.slots - 1
}

// know records the top-level field name as known, not unknown.
func (t *table) know(name string) {
	if _, ok := t.fields[name]; !ok {
		t.fields[name] = -1
	}
}

// plainPath reports whether the GJSON path p names one top-level field by
// its name: letters, digits, '_' and '-', none of GJSON's special
// characters, so that the field whose name is p is what p reads (the first
// of that name, as GJSON's Get finds it).
func plainPath(p string) bool {
	if p == "" {
		return false
	}
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// sameTable says how a and b, two rules' declarations of one table,
// differ, or "" when they do not: their columns (names, types and NOT
// NULL, in order), time column, indexes and drift policy must be the same.
// Where a column's value comes from may differ.
func sameTable(a, b *table) string {
	da, db := a.decl, b.decl
	switch {
	case a.unknown != b.unknown:
		return fmt.Sprintf("unknown: %s, not %s", b.unknown, a.unknown)
	case len(da.Columns) != len(db.Columns):
		return fmt.Sprintf("%d columns, not %d", len(db.Columns), len(da.Columns))
	}
	for i := range da.Columns {
		if ca, cb := da.Columns[i], db.Columns[i]; ca != cb {
			return fmt.Sprintf("column %d is %s, not %s", i+1, describeColumn(cb), describeColumn(ca))
		}
	}
	switch {
	case da.TimeColumn != db.TimeColumn:
		return fmt.Sprintf("time column %q, not %q", db.TimeColumn, da.TimeColumn)
	case !slices.EqualFunc(da.Indexes, db.Indexes, func(x, y typed.Index) bool {
		return x.Unique == y.Unique && slices.Equal(x.Columns, y.Columns)
	}):
		return "other indexes"
	}
	return ""
}

// describeColumn is c as DDL would write it.
func describeColumn(c typed.Column) string {
	s := c.Name + " " + c.Type.String()
	if c.NotNull {
		s += " NOT NULL"
	}
	return s
}

// Tables are the typed tables the rules declare, one per table in the
// order the rules first name them: the declared columns in order, then the
// extra column of unknown fields (a rule with unknown: keep); the time
// column and required columns NOT NULL; and the indexes, a unique one
// holding the time column (added last when the rule did not list it).
func (m *Mapper) Tables() []typed.Table {
	if m == nil {
		return nil
	}
	var out []typed.Table
	for _, t := range m.tables {
		d := t.decl
		d.Columns = slices.Clone(d.Columns)
		d.Indexes = slices.Clone(d.Indexes)
		for i := range d.Indexes {
			d.Indexes[i].Columns = slices.Clone(d.Indexes[i].Columns)
		}
		out = append(out, d)
	}
	return out
}
