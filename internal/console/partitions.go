package console

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

// PartitionsFunc reads the partitions of readings and of the typed tables,
// and the retention in force.
type PartitionsFunc func(ctx context.Context) (*Partitions, error)

// Partitions is what the partitions page shows.
type Partitions struct {
	// Retention drops partitions whose whole range is older than it
	// (--retention, or the deployment's recorded one); 0 keeps everything.
	Retention time.Duration
	// Maintained says whether a bridge of this process keeps the partitions
	// (creates them ahead and applies the retention).
	Maintained bool
	// NextDrop is the partition the retention drops next and when; nil: none.
	NextDrop *Drop
	Tables   []PartitionedTable
}

// Drop is a partition and the time from which the retention drops it (at
// the maintenance pass after it, one a minute).
type Drop struct {
	Table, Partition string
	At               time.Time
}

// PartitionedTable is readings or a typed table with its partitions, oldest
// first, the default partition last.
type PartitionedTable struct {
	Name       string
	Partitions []Partition
}

// Partition is one partition: its range (nil bounds are unbounded; both nil
// is the default partition), its rows (PostgreSQL's estimate) and its size
// on disk with its indexes.
type Partition struct {
	Name     string
	From, To *time.Time
	Rows     int64 // estimated; -1: never analyzed
	Bytes    int64
}

const partitionsTimeout = 10 * time.Second

type partitionsPage struct {
	*Partitions
	Error   string
	Enabled bool
}

func (c *Console) partitionsPage(w http.ResponseWriter, r *http.Request) {
	if !c.authorized(r) {
		c.render(w, http.StatusUnauthorized, "login.html", loginPage{})
		return
	}
	page := partitionsPage{Partitions: &Partitions{}, Enabled: c.partitions != nil}
	if c.partitions != nil {
		ctx, cancel := context.WithTimeout(r.Context(), partitionsTimeout)
		defer cancel()
		p, err := c.partitions(ctx)
		if err != nil {
			page.Error = err.Error()
		} else {
			page.Partitions = p
		}
	}
	c.render(w, http.StatusOK, "partitions.html", page)
}

// RetentionText is the retention in days, or hours when not whole days.
func (p *Partitions) RetentionText() string {
	if d := 24 * time.Hour; p.Retention%d == 0 {
		return fmt.Sprintf("%dd", p.Retention/d)
	}
	return p.Retention.String()
}

// FromText is the partition's lower bound as the page shows it.
func (p Partition) FromText() string { return boundText(p.From, p.To, "MINVALUE") }

// ToText is the partition's upper bound as the page shows it.
func (p Partition) ToText() string { return boundText(p.To, p.From, "MAXVALUE") }

func boundText(b, other *time.Time, unbounded string) string {
	switch {
	case b == nil && other == nil:
		return "DEFAULT"
	case b == nil:
		return unbounded
	}
	return b.UTC().Format("2006-01-02 15:04Z")
}

// Size is the partition's bytes in kB, MB or GB.
func (p Partition) Size() string {
	const k = 1024
	switch b := float64(p.Bytes); {
	case b >= k*k*k:
		return fmt.Sprintf("%.1f GB", b/(k*k*k))
	case b >= k*k:
		return fmt.Sprintf("%.1f MB", b/(k*k))
	}
	return fmt.Sprintf("%.0f kB", float64(p.Bytes)/k)
}
