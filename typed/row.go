package typed

import "time"

// Column is one column of a typed table.
type Column struct {
	Name string
	Type Type
	// NotNull: the column is NOT NULL (the time column always is).
	NotNull bool
}

// Shape is the table a row goes to and the columns it fills, in order. The
// rows of one rule share one Shape; a decoded row has its own.
type Shape struct {
	Table   string
	Columns []Column
}

// Row is one row of a typed table: Values[i] fills Shape.Columns[i].
type Row struct {
	Shape  *Shape
	Values []Value
}

// Value is one column's value. Which field holds it follows the column's
// Type; Null is SQL NULL whatever the type. A row holds a Value a column,
// so it is kept small (48 bytes): the arrays, rare, are behind a pointer
// (FloatsValue, StrsValue).
type Value struct {
	Null bool
	// Bool: boolean.
	Bool bool
	// Int: smallint, integer and bigint; timestamptz as Unix nanoseconds.
	Int int64
	// Float: real and double precision.
	Float float64
	// Str: text; numeric as a decimal number ("-12.5", "1e3"); jsonb as
	// compact JSON.
	Str string
	// list: double precision[] (Floats) and text[] (Strs); nil is an
	// empty array.
	list *list
}

// list is an array Value's elements.
type list struct {
	floats []float64
	strs   []string
}

// TimeValue is the timestamptz Value of t.
func TimeValue(t time.Time) Value { return Value{Int: t.UnixNano()} }

// Time is v as a timestamptz.
func (v Value) Time() time.Time { return time.Unix(0, v.Int).UTC() }

// FloatsValue is the double precision[] Value of fs (nil or empty: an
// empty array). The Value holds fs, not a copy.
func FloatsValue(fs []float64) Value { return Value{list: &list{floats: fs}} }

// Floats is v's elements as a double precision[], nil for none.
func (v Value) Floats() []float64 {
	if v.list == nil {
		return nil
	}
	return v.list.floats
}

// StrsValue is the text[] Value of ss (nil or empty: an empty array). The
// Value holds ss, not a copy.
func StrsValue(ss []string) Value { return Value{list: &list{strs: ss}} }

// Strs is v's elements as a text[], nil for none.
func (v Value) Strs() []string {
	if v.list == nil {
		return nil
	}
	return v.list.strs
}
