package mapping_test

import (
	"errors"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"firehose/mapping"
)

func TestDecodeYAML(t *testing.T) {
	for _, tc := range []struct {
		name string
		text string
		line int
		want string
	}{
		{name: "two rules", text: "- {name: a, topic: \"a/{device_id}\", metrics: [v]}\n- {name: b, topic: \"b/{device_id}\", metrics: [w]}\n"},
		{name: "not a list", text: "name: x\n", line: 1, want: "want a list of rules"},
		{name: "unknown key", text: "- name: press\n  topic: a/{device_id}\n  metric: [v]\n", line: 3, want: `unknown key "metric"`},
		{name: "rule that cannot work", text: "- name: press\n  topic: a/{device_id}\n", line: 1, want: `rule "press": no metrics`},
		{name: "typed table", text: pressYAML},
		{name: "unknown column key", text: strings.Replace(pressYAML, "required: true", "requred: true", 1), line: 13, want: `unknown key "requred" (each of columns has capture, name, path, required, source, type)`},
		{name: "unknown index key", text: strings.Replace(pressYAML, "unique: true", "uniq: true", 1), line: 20, want: `unknown key "uniq" (each of indexes has columns, unique)`},
		{name: "unknown rule key", text: "- name: press\n  topic: a/{device_id}\n  tabel: t\n", line: 3, want: `unknown key "tabel" (a rule has device, endpoint, exclude, id, metrics, name, payload, samples, time, time_format, topic; with a table: columns, extra, identity, indexes, table, unknown)`},
		{name: "column that cannot work", text: strings.Replace(pressYAML, "type: real", "type: float16", 1), line: 12, want: `rule "press": column "temp": column type "float16"`},
		{name: "index that cannot work", text: strings.Replace(pressYAML, "[msg_id]", "[msgid]", 1), line: 19, want: `indexes[1]: column "msgid": no such column`},
		{name: "table declared otherwise", text: pressYAML + "- {name: other, endpoint: /v1/readings, device: d, table: press_telemetry, columns: [{name: time, type: timestamptz, source: time}]}\n", line: 21, want: `is declared otherwise by rule "press"`},
		{name: "one name twice", text: "- {name: a, topic: \"a/{device_id}\", metrics: [v]}\n- {name: a, topic: \"b/{device_id}\", metrics: [v]}\n", line: 2, want: "the rule on line 1 has that name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var doc yaml.Node
			if err := yaml.Unmarshal([]byte(tc.text), &doc); err != nil {
				t.Fatal(err)
			}
			m, err := mapping.DecodeYAML(doc.Content[0])
			if tc.want == "" {
				if err != nil || m == nil {
					t.Fatalf("DecodeYAML = %v, %v", m, err)
				}
				return
			}
			var le *mapping.LineError
			if !errors.As(err, &le) || le.Line != tc.line || !strings.Contains(le.Msg, tc.want) {
				t.Fatalf("DecodeYAML error %v, want line %d containing %q", err, tc.line, tc.want)
			}
		})
	}
}

// pressYAML is the example rule.
const pressYAML = `- name: press
  topic: factory/{site}/{device_id}/telemetry
  time: ts
  id: msg_id
  table: press_telemetry
  columns:
    - {name: device_id, type: text, source: device}
    - {name: site,      type: text, capture: site}
    - {name: time,      type: timestamptz, source: time}
    - {name: received_at, type: timestamptz, source: received}
    - {name: msg_id,    type: text, source: id}
    - {name: temp,      type: real, path: temp}
    - {name: rpm,       type: integer, path: rpm, required: true}
  unknown: keep
  extra: extra
  identity: [site]
  indexes:
    - {columns: [device_id, time]}
    - columns: [msg_id]
      unique: true
`
