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
