package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"firehose/internal/testenv"
)

// pressRules is the config file of a deployment whose rule press routes to
// the typed table press_telemetry; extra is more of its columns, indexes
// more of its indexes.
func pressRules(pgURL, rpmType, extra, indexes string) string {
	return "postgres: " + pgURL + "\nbatch-size: 500\nrules:\n  - name: press\n    topic: factory/{device_id}/telemetry\n" +
		"    table: press_telemetry\n    unknown: ignore\n    columns:\n" +
		"      - {name: device_id, type: text, source: device}\n" +
		"      - {name: time, type: timestamptz, source: time}\n" +
		"      - {name: rpm, type: " + rpmType + ", path: rpm}\n" + extra +
		"    indexes:\n      - {columns: [device_id, time]}\n" + indexes
}

// firehose migrate --config FILE reads serve's file (its settings and
// rules), creates the rules' typed tables, adds what a rule adds, and
// refuses an unsafe change with what to do (exit 1).
func TestIntegrationMigrateTypedTables(t *testing.T) {
	pgURL := testenv.Postgres(t)
	file := filepath.Join(t.TempDir(), "firehose.yaml")
	write := func(config string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(pressRules(pgURL, "integer", "", ""))
	migrate := func(wantCode int) (stdout, stderr string) {
		t.Helper()
		var out, errOut bytes.Buffer
		if code := run(context.Background(), []string{"migrate", "--config", file, "--log-level", "warn"}, &out, &errOut); code != wantCode {
			t.Fatalf("exit %d, want %d: %s%s", code, wantCode, out.String(), errOut.String())
		}
		return out.String(), errOut.String()
	}
	if out, _ := migrate(0); out != "schema is current\ncreated table press_telemetry\n" {
		t.Errorf("first run printed %q", out)
	}
	if out, _ := migrate(0); out != "schema is current\ntyped tables: nothing to change (1 checked)\n" {
		t.Errorf("second run printed %q", out)
	}
	write(pressRules(pgURL, "integer", "      - {name: pressure, type: double precision, path: pressure}\n", "      - {columns: [pressure]}\n"))
	if out, _ := migrate(0); out != "schema is current\nadded column press_telemetry.pressure double precision\nbuilt index press_telemetry_pressure_idx\n" {
		t.Errorf("run adding a column printed %q", out)
	}
	write(pressRules(pgURL, "bigint", "      - {name: pressure, type: double precision, path: pressure}\n", "      - {columns: [pressure]}\n"))
	_, errOut := migrate(1)
	for _, want := range []string{
		"refused: table press_telemetry (rule press), column rpm: integer in the table, bigint in the rule; change the column by hand",
		"firehose: 1 unsafe change(s) refused (listed above)",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr %q lacks %q", errOut, want)
		}
	}
	if n := testenv.QueryInt(t, pgURL, "SELECT count(*) FROM pg_attribute WHERE attrelid = 'press_telemetry'::regclass AND attname = 'rpm' AND atttypid = 'integer'::regtype"); n != 1 {
		t.Error("the refused run changed rpm's type")
	}
}
