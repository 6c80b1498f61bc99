package schema

import (
	"errors"
	"fmt"
)

// Errors a *Mismatch wraps, for errors.Is.
var (
	// ErrUnsafeChange is a difference between a typed table in PostgreSQL
	// and its rule that EnsureTables refuses to resolve by itself (a type
	// change, a NOT NULL column the rule no longer writes, a table not
	// partitioned by its time column): someone decides, and runs the fix
	// the error names. EnsureTables and CheckTables return it.
	ErrUnsafeChange = errors.New("unsafe schema change")
	// ErrNotMigrated is a typed table, column or index the rules declare
	// that PostgreSQL does not have yet: firehose migrate --config FILE
	// creates it. CheckTables returns it.
	ErrNotMigrated = errors.New("typed table not migrated")
)

// Mismatch is one difference between a typed table and its rule: which
// table, rule and column (empty for the table as a whole), what differs,
// and what to do about it.
type Mismatch struct {
	Table, Rule, Column string
	// Problem says what differs, e.g. "integer in the table, bigint in the
	// rule".
	Problem string
	// Fix says what to do, e.g. the statement to run by hand.
	Fix string
	// Kind is ErrUnsafeChange or ErrNotMigrated.
	Kind error
}

// Error reads "table T (rule R), column C: PROBLEM; FIX".
func (m *Mismatch) Error() string {
	where := "table " + m.Table
	if m.Rule != "" {
		where += " (rule " + m.Rule + ")"
	}
	if m.Column != "" {
		where += ", column " + m.Column
	}
	return fmt.Sprintf("%s: %s; %s", where, m.Problem, m.Fix)
}

// Unwrap returns Kind.
func (m *Mismatch) Unwrap() error { return m.Kind }
