package subscriber

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"text/tabwriter"
	"time"
)

// staleAfter is when a reported state is old: its subscriber stopped, or
// cannot reach Redis.
const staleAfter = 3 * reportEvery

// WriteStates prints the subscribers' reported states (by client id, as
// stream.SubscriberStates.All returns them) as firehose status's table; a
// state not reported for a while is marked stale.
func WriteStates(w io.Writer, states map[string]string, now time.Time) error {
	if len(states) == 0 {
		return nil
	}
	var errs []string
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SUBSCRIBER\tBROKER\tCONNECTED\tSESSION KEPT\tPROTOCOL\tIN FLIGHT\tRECEIVED\tRESENT\tRECOGNISED\tREPORTED")
	for _, id := range slices.Sorted(maps.Keys(states)) {
		var st State
		if err := json.Unmarshal([]byte(states[id]), &st); err != nil {
			fmt.Fprintf(tw, "%s\t(unreadable state: %v)\t\t\t\t\t\t\t\t\n", id, err)
			continue
		}
		age := now.Sub(st.Reported).Round(time.Second)
		reported := fmt.Sprintf("%s ago", age)
		connected := yesNo(st.Connected)
		if age > staleAfter {
			reported += " (stale: stopped?)"
			connected = "?"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n", id, st.Broker, connected, yesNo(st.SessionPresent), st.Protocol,
			st.InFlight, st.Received, st.Redeliveries, st.Recognised, reported)
		if st.LastError != "" && !st.Connected {
			errs = append(errs, fmt.Sprintf("%s: last error: %s", id, st.LastError))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, e := range errs {
		fmt.Fprintln(w, e)
	}
	return nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
