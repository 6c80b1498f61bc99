package mapping

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// LineError is a rule of a YAML file that cannot be read, at its line.
type LineError struct {
	Line int
	Msg  string
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Msg) }

// DecodeYAML reads a list of rules (each a mapping of Rule's keys, as a
// configuration file's rules: section holds them) and builds their Mapper.
// An unknown key, a value of the wrong shape, a rule that cannot work or a
// name given twice is refused with a *LineError.
func DecodeYAML(v *yaml.Node) (*Mapper, error) {
	if v.Kind != yaml.SequenceNode {
		return nil, &LineError{Line: v.Line, Msg: "rules: want a list of rules (- name: ...)"}
	}
	known := yamlKeys()
	var rules []Rule
	lines := map[string]int{} // rule name -> its line
	for _, n := range v.Content {
		if n.Kind != yaml.MappingNode {
			return nil, &LineError{Line: n.Line, Msg: "rules: each rule is a mapping of keys (name:, topic: or endpoint:, metrics:, ...)"}
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if !known[k.Value] {
				return nil, &LineError{Line: k.Line, Msg: fmt.Sprintf("rules: unknown key %q (a rule has %s)", k.Value, strings.Join(slices.Sorted(maps.Keys(known)), ", "))}
			}
		}
		var r Rule
		if err := n.Decode(&r); err != nil {
			return nil, &LineError{Line: n.Line, Msg: "rules: " + strings.TrimPrefix(err.Error(), "yaml: ")}
		}
		if _, err := New([]Rule{r}); err != nil {
			return nil, &LineError{Line: n.Line, Msg: "rules: " + err.Error()}
		}
		if line, ok := lines[r.Name]; ok {
			return nil, &LineError{Line: n.Line, Msg: fmt.Sprintf("rules: rule %q: the rule on line %d has that name", r.Name, line)}
		}
		lines[r.Name] = n.Line
		rules = append(rules, r)
	}
	m, err := New(rules)
	if err != nil {
		return nil, &LineError{Line: v.Line, Msg: "rules: " + err.Error()}
	}
	return m, nil
}

// yamlKeys are the YAML keys of Rule.
func yamlKeys() map[string]bool {
	keys := map[string]bool{}
	t := reflect.TypeFor[Rule]()
	for i := range t.NumField() {
		if k, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); k != "" {
			keys[k] = true
		}
	}
	return keys
}
