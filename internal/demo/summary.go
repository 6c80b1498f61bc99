package demo

import (
	"errors"
	"fmt"
	"io"
	"time"

	"firehose/simulator"
)

// Summary is what one demo run measured: the HTTP burst's readings and
// where they landed, the MQTT fleet's report, and the stop.
type Summary struct {
	Accepted, Rows, Distinct int64             // HTTP: acknowledged, rows landed, distinct readings among them
	Fleet                    *simulator.Report // the MQTT fleet's; nil without one
	Landed                   time.Duration     // from the last HTTP answer until all of them landed
	Stopped                  time.Duration     // how long the clean stop took
	StopErr                  error
	Next                     []string // "where to look next": pairs of a command or page and what it shows
}

// Write prints the table of acknowledged, landed, missing and duplicated
// readings, the latencies and the verdict, and returns an error unless every
// acknowledged reading landed exactly once and the stack stopped cleanly.
func (s Summary) Write(w io.Writer) error {
	fleet := s.Fleet
	fmt.Fprintf(w, "\n%-30s %12s %8s %8s %11s\n", "", "acknowledged", "landed", "missing", "duplicated")
	fmt.Fprintf(w, "%-30s %12d %8d %8d %11d\n", "HTTP clients (200 OK)", s.Accepted, s.Rows, max(s.Accepted-s.Distinct, 0), s.Rows-s.Distinct)
	if fleet != nil && fleet.Landing != nil {
		l := fleet.Landing
		fmt.Fprintf(w, "%-30s %12d %8d %8d %11d\n", "MQTT devices, QoS 1 (PUBACK)", fleet.Send.Acked, l.Rows, l.Missing, l.Rows-l.Readings)
	}
	fmt.Fprintln(w)
	if fleet != nil && fleet.Landing != nil {
		a := fleet.AckLatency
		fmt.Fprintf(w, "%-30s p50 %s, p99 %s (stored in Redis before the PUBACK)\n", "MQTT ack latency", ms(a.P50Ms), ms(a.P99Ms))
		fmt.Fprintf(w, "%-30s %s after the fleet stopped\n", "MQTT rows checked", ms(fleet.Landing.WaitedS*1000))
	}
	fmt.Fprintf(w, "%-30s %s after the last answer\n", "HTTP all landed", s.Landed.Round(time.Millisecond))
	stop := "in " + s.Stopped.Round(time.Millisecond).String()
	if s.StopErr != nil {
		stop = "FAILED: " + s.StopErr.Error()
	}
	fmt.Fprintf(w, "%-30s %s\n", "clean stop", stop)
	switch {
	case s.StopErr != nil:
		return fmt.Errorf("stop: %w", s.StopErr)
	case s.Distinct != s.Accepted || s.Rows != s.Distinct:
		return fmt.Errorf("demo failed: %d accepted over HTTP, %d landed, %d distinct", s.Accepted, s.Rows, s.Distinct)
	case s.Accepted == 0:
		return errors.New("demo failed: nothing was accepted over HTTP")
	case fleet != nil && (!fleet.OK || fleet.Landing == nil):
		return fmt.Errorf("demo failed: MQTT fleet: %s", fleet.Verdict())
	}
	what := "HTTP"
	if fleet != nil {
		what = "HTTP and MQTT"
	}
	fmt.Fprintf(w, "\nOK: every acknowledged reading (%s) landed exactly once.\n", what)
	if len(s.Next) > 0 {
		fmt.Fprintf(w, "\nWhere to look next:\n")
		for i := 0; i+1 < len(s.Next); i += 2 {
			fmt.Fprintf(w, "  %s\n      %s\n", s.Next[i], s.Next[i+1])
		}
	}
	return nil
}

// ms prints a latency given in milliseconds to a tenth of one.
func ms(v float64) string {
	return time.Duration(v * float64(time.Millisecond)).Round(100 * time.Microsecond).String()
}
