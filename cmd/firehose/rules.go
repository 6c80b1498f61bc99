package main

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"firehose/internal/cli"
	"firehose/mapping"
)

// rulesKey is the configuration file's top-level key for mapping rules: how
// a topic or endpoint and its payload become readings (package mapping).
const rulesKey = "rules"

// decodeRules reads the configuration file's rules: section (a list of
// rules, each a mapping of mapping.Rule's keys), checks every rule, and
// gives them to the broker and the gateway. An unknown key, a value of the
// wrong shape or a rule that cannot work is refused with its line, so that
// serve refuses it at start and config check shows it.
func (c *serveConfig) decodeRules(v *yaml.Node) error {
	if v.Kind != yaml.SequenceNode {
		return &cli.FileError{Line: v.Line, Msg: "rules: want a list of rules (- name: ...)"}
	}
	known := ruleKeys()
	var rules []mapping.Rule
	lines := map[string]int{} // rule name -> its line
	for _, n := range v.Content {
		if n.Kind != yaml.MappingNode {
			return &cli.FileError{Line: n.Line, Msg: "rules: each rule is a mapping of keys (name:, topic: or endpoint:, metrics:, ...)"}
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if !known[k.Value] {
				return &cli.FileError{Line: k.Line, Msg: fmt.Sprintf("rules: unknown key %q (a rule has %s)", k.Value, strings.Join(slices.Sorted(maps.Keys(known)), ", "))}
			}
		}
		var r mapping.Rule
		if err := n.Decode(&r); err != nil {
			return &cli.FileError{Line: n.Line, Msg: "rules: " + strings.TrimPrefix(err.Error(), "yaml: ")}
		}
		if _, err := mapping.New([]mapping.Rule{r}); err != nil {
			return &cli.FileError{Line: n.Line, Msg: "rules: " + err.Error()}
		}
		if line, ok := lines[r.Name]; ok {
			return &cli.FileError{Line: n.Line, Msg: fmt.Sprintf("rules: rule %q: the rule on line %d has that name", r.Name, line)}
		}
		lines[r.Name] = n.Line
		rules = append(rules, r)
	}
	m, err := mapping.New(rules)
	if err != nil {
		return &cli.FileError{Line: v.Line, Msg: "rules: " + err.Error()}
	}
	c.MQTT.Rules, c.HTTP.Rules = m, m
	return nil
}

// ruleKeys are the YAML keys of mapping.Rule.
func ruleKeys() map[string]bool {
	keys := map[string]bool{}
	t := reflect.TypeFor[mapping.Rule]()
	for i := range t.NumField() {
		if k, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); k != "" {
			keys[k] = true
		}
	}
	return keys
}
