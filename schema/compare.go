package schema

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"firehose/typed"
)

// Querier is what CheckTables needs: *pgxpool.Pool, *pgx.Conn and pgx.Tx
// have it.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// catalog is what PostgreSQL's catalog says of a table.
type catalog struct {
	kind     string   // pg_class.relkind: p partitioned, r ordinary, v view, ...
	strategy string   // pg_partitioned_table.partstrat (r range, l list, h hash), "" if none
	key      []string // the partition key's columns ("" for an expression)
	columns  []catalogColumn
	indexes  []catalogIndex
}

type catalogColumn struct {
	name, typ string // typ as format_type prints it
	notNull   bool
	// filled is true when PostgreSQL fills the column itself (a default,
	// an identity, a generated column), so a NOT NULL one needs no value.
	filled bool
}

type catalogIndex struct {
	name    string
	columns []string // key columns ("" for an expression)
	unique  bool
	valid   bool
	partial bool // has a predicate or an expression: never the rule's
}

// readCatalog reads table's definition; nil when there is no such relation.
func readCatalog(ctx context.Context, q Querier, table string) (*catalog, error) {
	var (
		oid  *uint32
		kind string
	)
	err := q.QueryRow(ctx, "SELECT oid, relkind::text FROM pg_class WHERE oid = to_regclass($1)", ident(table)).Scan(&oid, &kind)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up table %s: %w", table, err)
	}
	c := &catalog{kind: kind}
	rows, err := q.Query(ctx, `
		SELECT attname, format_type(atttypid, atttypmod), attnotnull,
		       atthasdef OR attidentity <> '' OR attgenerated <> ''
		FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, *oid)
	if err == nil {
		c.columns, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (catalogColumn, error) {
			var col catalogColumn
			return col, r.Scan(&col.name, &col.typ, &col.notNull, &col.filled)
		})
	}
	if err != nil {
		return nil, fmt.Errorf("read the columns of %s: %w", table, err)
	}
	err = q.QueryRow(ctx, `
		SELECT p.partstrat::text, ARRAY(
		    SELECT coalesce(a.attname::text, '')
		    FROM unnest(p.partattrs::int2[]) WITH ORDINALITY k(n, o)
		    LEFT JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = k.n
		    ORDER BY k.o)
		FROM pg_partitioned_table p WHERE p.partrelid = $1`, *oid).Scan(&c.strategy, &c.key)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("read the partitioning of %s: %w", table, err)
	}
	rows, err = q.Query(ctx, `
		SELECT ic.relname, i.indisunique, i.indisvalid, i.indexprs IS NOT NULL OR i.indpred IS NOT NULL,
		       ARRAY(SELECT coalesce(a.attname::text, '')
		             FROM unnest((i.indkey::int2[])[0:i.indnkeyatts - 1]) WITH ORDINALITY k(n, o)
		             LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n
		             ORDER BY k.o)
		FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
		WHERE i.indrelid = $1 ORDER BY ic.relname`, *oid)
	if err == nil {
		c.indexes, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (catalogIndex, error) {
			var ix catalogIndex
			return ix, r.Scan(&ix.name, &ix.unique, &ix.valid, &ix.partial, &ix.columns)
		})
	}
	if err != nil {
		return nil, fmt.Errorf("read the indexes of %s: %w", table, err)
	}
	return c, nil
}

// diff is what makes an existing typed table match its rule.
type diff struct {
	add     []typed.Column // columns to add, nullable
	indexes []indexToBuild // indexes missing or not valid yet
	kept    []string       // columns no rule names, nullable or filled: left alone
	refused []*Mismatch    // differences EnsureTables does not resolve
}

// indexToBuild is an index of the rule the table lacks (exists false) or
// has but not valid on every partition yet (a build that stopped half-way).
type indexToBuild struct {
	name    string
	columns []string
	unique  bool
	exists  bool
}

// compare compares t with its table's catalog c.
func compare(t typed.Table, c *catalog) diff {
	var d diff
	refuse := func(column, problem, fix string) {
		d.refused = append(d.refused, &Mismatch{Table: t.Name, Rule: t.Rule, Column: column, Problem: problem, Fix: fix, Kind: ErrUnsafeChange})
	}
	rename := fmt.Sprintf("rename it (ALTER TABLE %s RENAME TO %s_old) and run firehose migrate again, which creates it "+
		"partitioned by %s, then copy its rows over; or name another table in rule %s", ident(t.Name), t.Name, t.TimeColumn, t.Rule)
	switch {
	case c.kind != "p" && c.kind != "r":
		refuse("", "the name is taken by a relation that is not a table (relkind "+c.kind+")", "drop or rename it, or name another table in rule "+t.Rule)
		return d
	case c.kind == "r":
		refuse("", "the table exists but is not partitioned", rename)
		return d
	case c.strategy != "r" || !slices.Equal(c.key, []string{t.TimeColumn}):
		how := map[string]string{"r": "RANGE", "l": "LIST", "h": "HASH"}[c.strategy]
		refuse("", fmt.Sprintf("the table is partitioned by %s (%s), not by RANGE (%s)", how, strings.Join(c.key, ", "), t.TimeColumn), rename)
		return d
	}
	have := make(map[string]catalogColumn, len(c.columns))
	for _, col := range c.columns {
		have[col.name] = col
	}
	want := make(map[string]bool, len(t.Columns))
	for _, col := range t.Columns {
		want[col.Name] = true
		got, ok := have[col.Name]
		switch {
		case !ok:
			d.add = append(d.add, col)
		case got.typ != col.Type.String():
			refuse(col.Name, fmt.Sprintf("%s in the table, %s in the rule", got.typ, col.Type),
				fmt.Sprintf("change the column by hand (ALTER TABLE %s ALTER COLUMN %s TYPE %s USING %s::%s, which rewrites the table "+
					"under an exclusive lock), or give the rule the table's type or a column of another name",
					ident(t.Name), ident(col.Name), col.Type, ident(col.Name), col.Type))
		case col.Name == t.TimeColumn && !got.notNull:
			refuse(col.Name, "the time column is nullable in the table",
				fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s SET NOT NULL (it reads the whole table under an exclusive lock)",
					ident(t.Name), ident(col.Name)))
		case col.Name != t.TimeColumn && got.notNull && !col.NotNull:
			refuse(col.Name, "NOT NULL in the table, but the rule may leave it NULL",
				fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s DROP NOT NULL, or make it required: true in the rule",
					ident(t.Name), ident(col.Name)))
		}
	}
	for _, col := range c.columns {
		switch {
		case want[col.name]:
		case col.notNull && !col.filled:
			refuse(col.name, "NOT NULL in the table, but no column of the rule",
				fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s DROP NOT NULL if the rule dropped it on purpose, or add it back to the rule",
					ident(t.Name), ident(col.name)))
		default:
			d.kept = append(d.kept, col.name)
		}
	}
	for _, ix := range t.Indexes {
		cols := IndexColumns(t, ix)
		b := indexToBuild{name: IndexName(t.Name, cols, ix.Unique), columns: cols, unique: ix.Unique}
		found := false
		for _, got := range c.indexes {
			if !got.partial && got.unique == ix.Unique && slices.Equal(got.columns, cols) {
				if got.valid {
					found = true
					break
				}
				b.name, b.exists = got.name, true
			}
		}
		if !found && !slices.ContainsFunc(d.indexes, func(o indexToBuild) bool { return o.name == b.name }) {
			d.indexes = append(d.indexes, b)
		}
	}
	return d
}
