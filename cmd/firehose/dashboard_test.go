package main

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"firehose/internal/testenv"
)

// TestIntegrationDashboardMetricsExist checks that every metric the Grafana
// dashboard (deploy/grafana/firehose.json) queries is on the /metrics of a
// firehose process running every role, once a reading has gone through: a
// renamed metric would otherwise leave a panel silently empty.
func TestIntegrationDashboardMetricsExist(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("../../deploy/grafana/firehose.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("deploy/grafana/firehose.json does not parse: %v", err)
	}
	queried := map[string][]string{} // metric -> panels
	name := regexp.MustCompile(`firehose_[a-z0-9_]+`)
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, m := range name.FindAllString(tg.Expr, -1) {
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					m = strings.TrimSuffix(m, suffix)
				}
				if !slices.Contains(queried[m], p.Title) {
					queried[m] = append(queried[m], p.Title)
				}
			}
		}
	}
	if len(queried) < 10 {
		t.Fatalf("the dashboard queries only %d firehose metrics", len(queried))
	}

	_, base, _ := startServe(t, "--batch-age", "50ms")
	if code, body := post(t, base+"/v1/readings", "application/json", "", `{"device_id":"dash-1","reading":1}`); code != http.StatusOK {
		t.Fatalf("POST /v1/readings: %d %s", code, body)
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		v, _ := metric(t, base+"/metrics", "firehose_bridge_rows_committed_total")
		return v >= 1
	}, "the reading was not committed")

	// The one bridge owns the 4 default shards and, once it has committed
	// all it found, none lags.
	var exposed map[string]bool
	var owned, lagging int
	testenv.Eventually(t, 5*time.Second, func() bool {
		exposed, owned, lagging = scrapeFamilies(t, base+"/metrics")
		return owned == 4 && lagging == 0
	}, "firehose_bridge_shard_owned is 1 for %d shards (want 4), shard_lag_seconds non-zero for %d (want 0)", owned, lagging)
	for m, panels := range queried {
		if !exposed[m] {
			t.Errorf("the dashboard queries %s (panels %q), which /metrics does not expose", m, panels)
		}
	}
}

// scrapeFamilies reads /metrics: the metric families it exposes, and how many
// shards this bridge owns and how many of them lag.
func scrapeFamilies(t *testing.T, url string) (exposed map[string]bool, owned, lagging int) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	exposed = map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Fields(line); len(f) >= 3 && f[0] == "#" && f[1] == "TYPE" {
			exposed[f[2]] = true
		}
		if strings.HasPrefix(line, "firehose_bridge_shard_owned{") && strings.HasSuffix(line, " 1") {
			owned++
		}
		if strings.HasPrefix(line, "firehose_bridge_shard_lag_seconds{") && !strings.HasSuffix(line, " 0") {
			lagging++
		}
	}
	return exposed, owned, lagging
}
