package schema

import (
	"fmt"
	"hash/fnv"
	"regexp"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"firehose/typed"
)

// maxIdent is PostgreSQL's longest identifier (NAMEDATALEN - 1 bytes);
// a longer one is silently truncated, so names are kept within it.
const maxIdent = 63

// partitionSuffix is the longest suffix package partition gives a typed
// table's partitions (TABLE_pYYYYMMDD_HHMM), so a table's name leaves room
// for it.
const partitionSuffix = len("_p20060102_1504")

// MaxTableName is the longest name of a typed table in bytes: its partitions'
// names (NAME_p20261201_1300) must stay within PostgreSQL's 63.
const MaxTableName = maxIdent - partitionSuffix

var (
	identRE = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)
	// partRE matches the names of another table's partitions: a typed table
	// named so could collide with them.
	partRE = regexp.MustCompile(`_(p[0-9]{8}(_[0-9]{4})?|default)$`)
)

// reserved are firehose's own tables; a rule may not name one, nor
// readings_*, firehose_* (tables firehose has or may add).
var reserved = []string{"bridge_checkpoints", "bridge_members"}

// DefaultPartition is the name of a typed table's default partition, which
// holds the rows whose time has no partition yet (as readings_default does
// for readings).
func DefaultPartition(table string) string { return table + "_default" }

// CheckTable reports whether t can be created as a typed table: its name a
// lower-case identifier of at most MaxTableName bytes that is none of
// firehose's tables nor looks like a partition's, its columns named once
// each, its time column a timestamptz column of its own, and its indexes
// naming its columns.
func CheckTable(t typed.Table) error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("table %s (rule %s): %s", t.Name, t.Rule, fmt.Sprintf(format, args...))
	}
	switch {
	case !identRE.MatchString(t.Name):
		return fail("want a lower-case name of letters, digits and _ that does not start with a digit")
	case len(t.Name) > MaxTableName:
		return fail("%d bytes: want at most %d, so that its partitions' names (%s_p20261201_1300) fit PostgreSQL's %d",
			len(t.Name), MaxTableName, t.Name, maxIdent)
	case t.Name == "readings" || strings.HasPrefix(t.Name, "readings_") || strings.HasPrefix(t.Name, "firehose_") ||
		slices.Contains(reserved, t.Name):
		return fail("the name is firehose's (readings, readings_*, firehose_*, bridge_checkpoints, bridge_members): choose another")
	case partRE.MatchString(t.Name):
		return fail("a name ending in _default or _pYYYYMMDD[_HHMM] is a partition's: choose another")
	case len(t.Columns) == 0:
		return fail("no columns")
	}
	seen := make(map[string]bool, len(t.Columns))
	var timeCol *typed.Column
	for i, c := range t.Columns {
		if !identRE.MatchString(c.Name) || len(c.Name) > maxIdent {
			return fail("column %q: want a lower-case name of letters, digits and _ of at most %d bytes", c.Name, maxIdent)
		}
		if seen[c.Name] {
			return fail("column %s is named twice", c.Name)
		}
		if _, err := typed.ParseType(c.Type.String()); err != nil {
			return fail("column %s has no type", c.Name)
		}
		seen[c.Name] = true
		if c.Name == t.TimeColumn {
			timeCol = &t.Columns[i]
		}
	}
	if timeCol == nil {
		return fail("time column %q is none of its columns", t.TimeColumn)
	}
	if timeCol.Type != typed.Timestamptz {
		return fail("time column %s is %s: want timestamptz", timeCol.Name, timeCol.Type)
	}
	for _, ix := range t.Indexes {
		if len(ix.Columns) == 0 {
			return fail("an index without columns")
		}
		for _, c := range ix.Columns {
			if !seen[c] {
				return fail("index (%s) names %q, none of its columns", strings.Join(ix.Columns, ", "), c)
			}
		}
	}
	return nil
}

// IndexColumns is the columns of the index ix of t as created: a unique
// index gets t's time column appended when it lacks it, since PostgreSQL
// requires a partitioned table's unique index to hold the partition key.
func IndexColumns(t typed.Table, ix typed.Index) []string {
	cols := slices.Clone(ix.Columns)
	if ix.Unique && !slices.Contains(cols, t.TimeColumn) {
		cols = append(cols, t.TimeColumn)
	}
	return cols
}

// IndexName is the name of an index of table on cols: TABLE_COL1_COL2_key
// when unique, else _idx, as PostgreSQL names them, shortened with a hash
// of the whole when it would pass 63 bytes.
func IndexName(table string, cols []string, unique bool) string {
	suffix := "_idx"
	if unique {
		suffix = "_key"
	}
	name := table + "_" + strings.Join(cols, "_") + suffix
	if len(name) <= maxIdent {
		return name
	}
	h := fnv.New32a()
	h.Write([]byte(name))
	tail := fmt.Sprintf("_%08x%s", h.Sum32(), suffix)
	return name[:maxIdent-len(tail)] + tail
}

// ident quotes a name for SQL.
func ident(name string) string { return pgx.Identifier{name}.Sanitize() }

// idents quotes names for SQL, comma-separated.
func idents(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = ident(n)
	}
	return strings.Join(q, ", ")
}

// DDL is the statements that create the typed table t: the table,
// range-partitioned by its time column (NOT NULL), its default partition
// (DefaultPartition), and the indexes of its rule (IndexColumns, IndexName).
// Identifiers are quoted. The partitions of each interval are package
// partition's to create, as for readings.
func DDL(t typed.Table) []string {
	var b strings.Builder
	fmt.Fprintf(&b, "CREATE TABLE %s (", ident(t.Name))
	for i, c := range t.Columns {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, "\n    %s %s", ident(c.Name), c.Type)
		if c.NotNull || c.Name == t.TimeColumn {
			b.WriteString(" NOT NULL")
		}
	}
	fmt.Fprintf(&b, "\n) PARTITION BY RANGE (%s)", ident(t.TimeColumn))
	stmts := []string{
		b.String(),
		fmt.Sprintf("CREATE TABLE %s PARTITION OF %s DEFAULT", ident(DefaultPartition(t.Name)), ident(t.Name)),
	}
	for _, ix := range t.Indexes {
		stmts = append(stmts, createIndex(t.Name, IndexColumns(t, ix), ix.Unique, ""))
	}
	return stmts
}

// createIndex is CREATE INDEX on table's cols; only is "ONLY" for the
// parent's index alone (its partitions' are attached after), or
// "CONCURRENTLY" for a partition's, or "".
func createIndex(table string, cols []string, unique bool, how string) string {
	kind := "INDEX"
	if unique {
		kind = "UNIQUE INDEX"
	}
	switch how {
	case "ONLY":
		return fmt.Sprintf("CREATE %s %s ON ONLY %s (%s)", kind, ident(IndexName(table, cols, unique)), ident(table), idents(cols))
	case "CONCURRENTLY":
		return fmt.Sprintf("CREATE %s CONCURRENTLY %s ON %s (%s)", kind, ident(IndexName(table, cols, unique)), ident(table), idents(cols))
	}
	return fmt.Sprintf("CREATE %s %s ON %s (%s)", kind, ident(IndexName(table, cols, unique)), ident(table), idents(cols))
}
