package partition

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Querier is what List needs of a connection: a *pgx.Conn, a *pgxpool.Pool
// or a pgx.Tx.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Info is one partition of a table as List shows it.
type Info struct {
	Name string
	// From and To are its range; nil is MINVALUE or MAXVALUE, both nil the
	// default partition.
	From, To *time.Time
	// Rows is PostgreSQL's estimate (pg_class.reltuples); -1 before the
	// partition was first vacuumed or analyzed.
	Rows int64
	// Bytes is its size on disk with its indexes and TOAST.
	Bytes int64
}

// List is table's partitions, by range (as the maintenance reads them from
// the catalog), its default partition last; none when table does not exist
// or is not partitioned.
func List(ctx context.Context, q Querier, table string) ([]Info, error) {
	rows, err := q.Query(ctx, `
		SELECT c.relname,
		       (regexp_match(b, 'FROM \(''([^'']*)''\)'))[1]::timestamptz,
		       (regexp_match(b, 'TO \(''([^'']*)''\)'))[1]::timestamptz,
		       c.reltuples::bigint, pg_total_relation_size(c.oid)
		FROM pg_inherits i
		JOIN pg_class c ON c.oid = i.inhrelid
		CROSS JOIN LATERAL pg_get_expr(c.relpartbound, c.oid) AS b
		WHERE i.inhparent = to_regclass($1)
		ORDER BY b = 'DEFAULT', 3 NULLS LAST`, pgx.Identifier{table}.Sanitize())
	if err != nil {
		return nil, fmt.Errorf("list partitions of %s: %w", table, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Info, error) {
		var p Info
		err := r.Scan(&p.Name, &p.From, &p.To, &p.Rows, &p.Bytes)
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("list partitions of %s: %w", table, err)
	}
	return out, nil
}

// DropAt is when a retention drops a partition whose range ends at to: the
// first maintenance pass (one a minute) from to + retention on. With no
// retention (0) nothing is dropped: the zero time.
func DropAt(to time.Time, retention time.Duration) time.Time {
	if retention <= 0 {
		return time.Time{}
	}
	return to.Add(retention)
}
