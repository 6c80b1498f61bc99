package deadletters

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteTable prints rows as the table of firehose rejected list: one line a
// row, its fields cut to fit a terminal (Printable, Preview).
func WriteTable(w io.Writer, rows []Row) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tREJECTED AT\tSTREAM\tENTRY\tSTATUS\tERROR\tENTRY HOLDS")
	for i := range rows {
		r := &rows[i]
		status := r.Status()
		switch {
		case r.RefusedAs != nil:
			status = fmt.Sprintf("refused again: #%d", *r.RefusedAs)
		case r.ReplayOf != nil:
			status += fmt.Sprintf(" (replay of #%d)", *r.ReplayOf)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.RejectedAt.UTC().Format("2006-01-02 15:04:05Z"),
			Printable(r.Stream, 40), Printable(r.EntryID, 24), status, Printable(r.Error, 60), r.Preview())
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	return nil
}

// Write prints how the replays ended, for a run that skipped skipped rows
// and waited up to wait, and returns an error unless every replay landed
// and none was skipped.
func (o Outcome) Write(w io.Writer, skipped int, wait time.Duration) error {
	msg := fmt.Sprintf("%d landed in readings", o.Landed)
	if o.ByOthers > 0 {
		msg += fmt.Sprintf(" (%d of them by another replay of the same row, sent before or beside this one)", o.ByOthers)
	}
	fmt.Fprintln(w, msg)
	var errs []string
	if len(o.Refused) > 0 {
		var shown []string
		for _, r := range o.Refused[:min(len(o.Refused), 20)] {
			shown = append(shown, fmt.Sprintf("row %d as row %d", r.Row, r.As))
		}
		if len(o.Refused) > 20 {
			shown = append(shown, "…")
		}
		fmt.Fprintf(w, "%d refused again by the bridge, each a new row (firehose rejected list shows why): %s\n", len(o.Refused), strings.Join(shown, ", "))
		errs = append(errs, fmt.Sprintf("%d replays refused again", len(o.Refused)))
	}
	if o.Waiting > 0 {
		fmt.Fprintf(w, "%d not committed within --wait %s (is a bridge running?): they are in the streams and land once when a bridge commits them\n", o.Waiting, wait)
		errs = append(errs, fmt.Sprintf("%d replays not yet committed", o.Waiting))
	}
	if skipped > 0 {
		errs = append(errs, fmt.Sprintf("%d rows skipped: they need a repair", skipped))
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}
