package bridge

import (
	"cmp"
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// WriteStatus prints shards and members as the tables of firehose status:
// each shard with its owner, backlog, checkpoint and lag, then each live
// bridge with the shards it owns.
func WriteStatus(w io.Writer, shards []ShardStatus, members []MemberStatus) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SHARD\tSTREAM\tOWNER\tBRIDGE\tBACKLOG\tCHECKPOINT\tLAG\tROWS COMMITTED\tREJECTED")
	for _, s := range shards {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\t%d\t%d\n", s.Shard, s.Stream, cmp.Or(s.Owner, "(none)"), cmp.Or(s.Bridge, "-"),
			s.Backlog, cmp.Or(s.Checkpoint, "(none)"), (time.Duration(s.LagSeconds * float64(time.Second))).Round(time.Millisecond),
			s.Committed, s.Rejected)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "BRIDGE\tMEMBER\tJOINED\tLAST SEEN\tSHARDS OWNED")
	if len(members) == 0 {
		fmt.Fprintln(tw, "(none)\t\t\t\t")
	}
	for _, m := range members {
		fmt.Fprintf(tw, "%s:%d\t%s\t%s\t%s ago\t%d\n", m.Host, m.PID, m.ID, m.Joined.UTC().Format(time.RFC3339),
			m.Seen.Round(time.Millisecond), m.Owned)
	}
	return tw.Flush()
}

// WriteTables prints tables as the table of firehose status that shows
// where rows land: each table's estimated rows and size, or that it is
// missing.
func WriteTables(w io.Writer, tables []TableStatus) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TABLE\tROWS (ESTIMATE)\tSIZE")
	for _, t := range tables {
		if !t.Exists {
			fmt.Fprintf(tw, "%s\t(missing: its rows go to readings_rejected; run firehose migrate --config)\t\n", t.Table)
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%.1f MiB\n", t.Table, t.Rows, float64(t.Bytes)/(1<<20))
	}
	return tw.Flush()
}
