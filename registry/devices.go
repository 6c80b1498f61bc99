package registry

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"firehose/broker"
	"firehose/ingest"
)

// Channel is the PostgreSQL notification channel a change of the registry
// is announced on (by the table's trigger), with the device's id.
const Channel = "firehose_devices"

// DB is what the registry's changes need of a connection: a *pgx.Conn, a
// *pgxpool.Pool or a pgx.Tx.
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Grants are what a device may do beyond its own topics (see
// broker.Credential): MQTT topic filters to read and to write, and the
// Sparkplug B groups in which it is an edge node.
type Grants struct {
	Read, Write, Sparkplug []string
}

// Device is a device of the registry, as List shows it: never its secret's
// hash.
type Device struct {
	ID      string
	Enabled bool
	Grants
	CreatedAt, UpdatedAt time.Time
	// LastSeen is about when it last connected (within the brokers' flush
	// interval, 10 s); zero if never.
	LastSeen time.Time
}

// check validates id and the grants as the broker will read them.
func check(id, hash string, g Grants) error {
	if err := ingest.ValidateDeviceID(id, 0); err != nil {
		return fmt.Errorf("device id %q: %w", id, err)
	}
	if _, err := broker.NewCredential(hash, g.Read, g.Write, g.Sparkplug); err != nil {
		return fmt.Errorf("device %q: %w", id, err)
	}
	return nil
}

// orEmpty makes a nil list an empty array for PostgreSQL (the columns are
// NOT NULL).
func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// Add adds device id, enabled, with grants g and a new random secret, which
// it returns: the only time it is seen (only its hash is stored). An id
// already there is ErrExists.
func Add(ctx context.Context, db DB, id string, g Grants) (secret string, err error) {
	secret, hash, err := broker.NewSecret()
	if err != nil {
		return "", err
	}
	if err := check(id, hash, g); err != nil {
		return "", err
	}
	tag, err := db.Exec(ctx, `INSERT INTO firehose_devices (id, secret_hash, read, write, sparkplug)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING`,
		id, hash, orEmpty(g.Read), orEmpty(g.Write), orEmpty(g.Sparkplug))
	if err != nil {
		return "", fmt.Errorf("add device %q: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return "", fmt.Errorf("add device %q: %w", id, ErrExists)
	}
	return secret, nil
}

// List returns every device, by id.
func List(ctx context.Context, db DB) ([]Device, error) {
	rows, err := db.Query(ctx, `SELECT id, enabled, read, write, sparkplug, created_at, updated_at, last_seen
		FROM firehose_devices ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	ds, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Device, error) {
		var d Device
		var seen *time.Time
		err := r.Scan(&d.ID, &d.Enabled, &d.Read, &d.Write, &d.Sparkplug, &d.CreatedAt, &d.UpdatedAt, &seen)
		if seen != nil {
			d.LastSeen = *seen
		}
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	return ds, nil
}

// SetEnabled enables or disables device id. A disabled device is refused at
// CONNECT, and its live connections are disconnected within a second.
func SetEnabled(ctx context.Context, db DB, id string, enabled bool) error {
	tag, err := db.Exec(ctx, `UPDATE firehose_devices SET enabled = $2, updated_at = now() WHERE id = $1`, id, enabled)
	if err != nil {
		return fmt.Errorf("set device %q enabled=%t: %w", id, enabled, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("device %q: %w", id, ErrNotFound)
	}
	return nil
}

// Rotate gives device id a new random secret, which it returns once; the
// old one stops working, and the connections made with it are
// disconnected within a second.
func Rotate(ctx context.Context, db DB, id string) (secret string, err error) {
	secret, hash, err := broker.NewSecret()
	if err != nil {
		return "", err
	}
	tag, err := db.Exec(ctx, `UPDATE firehose_devices SET secret_hash = $2, updated_at = now() WHERE id = $1`, id, hash)
	if err != nil {
		return "", fmt.Errorf("rotate the secret of device %q: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return "", fmt.Errorf("device %q: %w", id, ErrNotFound)
	}
	return secret, nil
}

// Remove removes device id; its connections are disconnected within a
// second.
func Remove(ctx context.Context, db DB, id string) error {
	tag, err := db.Exec(ctx, `DELETE FROM firehose_devices WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("remove device %q: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("device %q: %w", id, ErrNotFound)
	}
	return nil
}

// Grant adds the grants g to device id's (those it has already are kept
// once).
func Grant(ctx context.Context, db DB, id string, g Grants) error {
	return changeGrants(ctx, db, id, func(cur *Grants) {
		add := func(to *[]string, more []string) {
			for _, s := range more {
				if !slices.Contains(*to, s) {
					*to = append(*to, s)
				}
			}
		}
		add(&cur.Read, g.Read)
		add(&cur.Write, g.Write)
		add(&cur.Sparkplug, g.Sparkplug)
	})
}

// Ungrant removes the grants g from device id's; its connections are
// disconnected within a second (a grant they used is gone).
func Ungrant(ctx context.Context, db DB, id string, g Grants) error {
	return changeGrants(ctx, db, id, func(cur *Grants) {
		drop := func(from *[]string, gone []string) {
			*from = slices.DeleteFunc(*from, func(s string) bool { return slices.Contains(gone, s) })
		}
		drop(&cur.Read, g.Read)
		drop(&cur.Write, g.Write)
		drop(&cur.Sparkplug, g.Sparkplug)
	})
}

// changeGrants reads device id's grants, changes them with change, checks
// the result and writes it back, in one transaction holding the row.
func changeGrants(ctx context.Context, db DB, id string, change func(*Grants)) error {
	return inTx(ctx, db, func(tx pgx.Tx) error {
		var g Grants
		var hash string
		err := tx.QueryRow(ctx, `SELECT secret_hash, read, write, sparkplug FROM firehose_devices WHERE id = $1 FOR UPDATE`, id).
			Scan(&hash, &g.Read, &g.Write, &g.Sparkplug)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("device %q: %w", id, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("read the grants of device %q: %w", id, err)
		}
		change(&g)
		if _, err := broker.NewCredential(hash, g.Read, g.Write, g.Sparkplug); err != nil {
			return fmt.Errorf("device %q: %w", id, err)
		}
		if _, err := tx.Exec(ctx, `UPDATE firehose_devices SET read = $2, write = $3, sparkplug = $4, updated_at = now() WHERE id = $1`,
			id, orEmpty(g.Read), orEmpty(g.Write), orEmpty(g.Sparkplug)); err != nil {
			return fmt.Errorf("write the grants of device %q: %w", id, err)
		}
		return nil
	})
}

// inTx runs f in a transaction of db (a nested one when db is a pgx.Tx).
func inTx(ctx context.Context, db DB, f func(pgx.Tx) error) error {
	tx, err := db.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if err := f(tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}
