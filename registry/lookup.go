package registry

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Get is device id as List shows it; false when the registry does not hold
// it.
func Get(ctx context.Context, db DB, id string) (Device, bool, error) {
	var d Device
	var seen *time.Time
	err := db.QueryRow(ctx, `SELECT id, enabled, read, write, sparkplug, created_at, updated_at, last_seen
		FROM firehose_devices WHERE id = $1`, id).Scan(&d.ID, &d.Enabled, &d.Read, &d.Write, &d.Sparkplug, &d.CreatedAt, &d.UpdatedAt, &seen)
	if errors.Is(err, pgx.ErrNoRows) {
		return Device{}, false, nil
	}
	if err != nil {
		return Device{}, false, fmt.Errorf("read device %q: %w", id, err)
	}
	if seen != nil {
		d.LastSeen = *seen
	}
	return d, true, nil
}

// Search is up to limit ids of the registry that start with prefix, in
// order.
func Search(ctx context.Context, db DB, prefix string, limit int) ([]string, error) {
	// The prefix is matched literally: LIKE's wildcards in it are escaped.
	like := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(prefix) + "%"
	rows, err := db.Query(ctx, `SELECT id FROM firehose_devices WHERE id LIKE $1 ORDER BY id LIMIT $2`, like, limit)
	if err != nil {
		return nil, fmt.Errorf("search devices: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("search devices: %w", err)
	}
	return ids, nil
}
