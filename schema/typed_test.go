package schema_test

import (
	"strings"
	"testing"

	"firehose/schema"
	"firehose/typed"
)

func TestDDL(t *testing.T) {
	got := schema.DDL(pump())
	want := []string{
		"CREATE TABLE \"pump_status\" (\n    \"ts\" timestamp with time zone NOT NULL,\n    \"state\" text,\n    \"alarm\" boolean\n) PARTITION BY RANGE (\"ts\")",
		`CREATE TABLE "pump_status_default" PARTITION OF "pump_status" DEFAULT`,
	}
	if strings.Join(got, ";\n") != strings.Join(want, ";\n") {
		t.Errorf("DDL\n%s\nwant\n%s", strings.Join(got, ";\n"), strings.Join(want, ";\n"))
	}
	got = schema.DDL(press())
	for i, w := range []string{
		`CREATE INDEX "press_telemetry_device_id_time_idx" ON "press_telemetry" ("device_id", "time")`,
		`CREATE UNIQUE INDEX "press_telemetry_msg_id_time_key" ON "press_telemetry" ("msg_id", "time")`,
	} {
		if got[2+i] != w {
			t.Errorf("index %d: %s, want %s", i, got[2+i], w)
		}
	}
}

func TestIndexNameFits(t *testing.T) {
	long := strings.Repeat("c", 40)
	a := schema.IndexName("press_telemetry_p20261201_1300", []string{long, "time"}, true)
	b := schema.IndexName("press_telemetry_p20261201_1300", []string{long, "ts"}, true)
	if len(a) > 63 || a == b || !strings.HasSuffix(a, "_key") {
		t.Errorf("%q and %q: want distinct names of at most 63 bytes ending in _key", a, b)
	}
}

func TestCheckTable(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*typed.Table)
		want string
	}{
		{name: "ok", edit: func(*typed.Table) {}},
		{name: "long name", edit: func(t *typed.Table) { t.Name = strings.Repeat("a", 49) }, want: "49 bytes: want at most 48"},
		{name: "readings", edit: func(t *typed.Table) { t.Name = "readings_press" }, want: "the name is firehose's"},
		{name: "partition-like", edit: func(t *typed.Table) { t.Name = "press_p20261201" }, want: "is a partition's"},
		{name: "upper case", edit: func(t *typed.Table) { t.Name = "Press" }, want: "lower-case name"},
		{name: "time not timestamptz", edit: func(t *typed.Table) { t.TimeColumn = "site" }, want: "time column site is text: want timestamptz"},
		{name: "no time column", edit: func(t *typed.Table) { t.TimeColumn = "when" }, want: `time column "when" is none of its columns`},
		{name: "twice", edit: func(t *typed.Table) { t.Columns[1].Name = "device_id" }, want: "column device_id is named twice"},
		{name: "index", edit: func(t *typed.Table) { t.Indexes[0].Columns[0] = "nope" }, want: `names "nope"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := press()
			tc.edit(&tb)
			err := schema.CheckTable(tb)
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("%v, want %q", err, tc.want)
			}
		})
	}
}
