package simulator

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// The target's metrics the simulator reads (firehose serve's /metrics).
const (
	metricBacklog   = "firehose_stream_backlog_entries"
	metricCommitted = "firehose_bridge_rows_committed_total"
)

// scrape is what one read of the target's /metrics found; a value is -1 when
// the metric was absent.
type scrape struct {
	backlog   float64 // summed over shards
	committed float64 // rows committed, ever, by the bridges this process runs
}

// readMetrics GETs a Prometheus text exposition and sums the samples of the
// metrics the simulator follows.
func readMetrics(ctx context.Context, client *http.Client, url string) (scrape, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return scrape{-1, -1}, fmt.Errorf("build metrics request: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return scrape{-1, -1}, fmt.Errorf("read metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return scrape{-1, -1}, fmt.Errorf("read metrics: %s answered %d", url, resp.StatusCode)
	}
	return parseMetrics(resp.Body)
}

// parseMetrics sums the samples of metricBacklog and metricCommitted in a
// Prometheus text exposition (name{labels} value [timestamp]).
func parseMetrics(r io.Reader) (scrape, error) {
	s := scrape{-1, -1}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var dst *float64
		switch {
		case strings.HasPrefix(line, metricBacklog):
			dst, line = &s.backlog, line[len(metricBacklog):]
		case strings.HasPrefix(line, metricCommitted):
			dst, line = &s.committed, line[len(metricCommitted):]
		default:
			continue
		}
		switch {
		case strings.HasPrefix(line, "{"):
			end := strings.LastIndexByte(line, '}')
			if end < 0 {
				continue
			}
			line = line[end+1:]
		case strings.HasPrefix(line, " "):
		default:
			continue // another metric whose name starts the same
		}
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			continue
		}
		if *dst < 0 {
			*dst = 0
		}
		*dst += v
	}
	if err := sc.Err(); err != nil {
		return scrape{-1, -1}, fmt.Errorf("read metrics: %w", err)
	}
	return s, nil
}
