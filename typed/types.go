package typed

import (
	"fmt"
	"strings"
)

// Type is the PostgreSQL type of a typed table's column.
type Type uint8

// The column types a rule may give. The zero Type is none.
const (
	Text Type = iota + 1
	Boolean
	Smallint
	Integer
	Bigint
	Real
	Double
	Numeric
	Timestamptz
	JSONB
	DoubleArray
	TextArray
)

// names are the types' SQL names, as PostgreSQL's format_type prints them.
var names = [...]string{
	Text:        "text",
	Boolean:     "boolean",
	Smallint:    "smallint",
	Integer:     "integer",
	Bigint:      "bigint",
	Real:        "real",
	Double:      "double precision",
	Numeric:     "numeric",
	Timestamptz: "timestamp with time zone",
	JSONB:       "jsonb",
	DoubleArray: "double precision[]",
	TextArray:   "text[]",
}

// aliases are the other spellings ParseType accepts.
var aliases = map[string]Type{
	"bool": Boolean, "int2": Smallint, "int": Integer, "int4": Integer, "int8": Bigint,
	"float4": Real, "float8": Double, "double": Double, "timestamptz": Timestamptz,
	"float8[]": DoubleArray, "double[]": DoubleArray,
}

// ParseType reads a type as a rule writes it: a name of the list above
// (case and repeated spaces aside) or a common alias (int, bigint, float8,
// double, timestamptz, bool, ...).
func ParseType(s string) (Type, error) {
	n := strings.Join(strings.Fields(strings.ToLower(s)), " ")
	for t, name := range names {
		if t != 0 && n == name {
			return Type(t), nil
		}
	}
	if t, ok := aliases[n]; ok {
		return t, nil
	}
	return 0, fmt.Errorf("column type %q: want one of text, boolean, smallint, integer, bigint, real, "+
		"double precision, numeric, timestamptz, jsonb, double precision[], text[]", s)
}

// String is the type's SQL name, as in DDL and in PostgreSQL's catalog
// (format_type): "double precision", "timestamp with time zone".
func (t Type) String() string {
	if int(t) < len(names) && t != 0 {
		return names[t]
	}
	return fmt.Sprintf("Type(%d)", uint8(t))
}

// valid reports whether t is one of the types above.
func (t Type) valid() bool { return t != 0 && int(t) < len(names) }
