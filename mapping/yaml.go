package mapping

import (
	"errors"
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
	var rules []Rule
	lines := map[string]int{} // rule name -> its line
	for _, n := range v.Content {
		if n.Kind != yaml.MappingNode {
			return nil, &LineError{Line: n.Line, Msg: "rules: each rule is a mapping of keys (name:, topic: or endpoint:, metrics:, ...)"}
		}
		if err := checkKeys(n, reflect.TypeFor[Rule](), "a rule"); err != nil {
			return nil, err
		}
		var r Rule
		if err := n.Decode(&r); err != nil {
			return nil, &LineError{Line: n.Line, Msg: "rules: " + strings.TrimPrefix(err.Error(), "yaml: ")}
		}
		if line, ok := lines[r.Name]; ok && r.Name != "" {
			return nil, &LineError{Line: n.Line, Msg: fmt.Sprintf("rules: rule %q: the rule on line %d has that name", r.Name, line)}
		}
		// With the rules before it: a table it names again must be
		// declared alike.
		if _, err := New(append(slices.Clip(rules), r)); err != nil {
			return nil, &LineError{Line: specLine(n, err), Msg: "rules: " + err.Error()}
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

// specLine is the line of the rule n that err, its compile error, is at: a
// column's or an index's, else the rule's.
func specLine(n *yaml.Node, err error) int {
	var se *specError
	if !errors.As(err, &se) {
		return n.Line
	}
	at := func(key string, i int) int {
		for k := 0; k+1 < len(n.Content); k += 2 {
			if v := n.Content[k+1]; n.Content[k].Value == key && v.Kind == yaml.SequenceNode && i < len(v.Content) {
				return v.Content[i].Line
			}
		}
		return n.Line
	}
	switch {
	case se.column >= 0:
		return at("columns", se.column)
	case se.index >= 0:
		return at("indexes", se.index)
	}
	return n.Line
}

// checkKeys refuses a key of the mapping n that t (a struct, what) has no
// field for, and those of the mappings in its lists of structs (a rule's
// columns and indexes).
func checkKeys(n *yaml.Node, t reflect.Type, what string) error {
	fields := yamlFields(t)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		f, ok := fields[k.Value]
		if !ok {
			return &LineError{Line: k.Line, Msg: fmt.Sprintf("rules: unknown key %q (%s has %s)", k.Value, what, keyList(fields, t == reflect.TypeFor[Rule]()))}
		}
		if f.Kind() != reflect.Slice || f.Elem().Kind() != reflect.Struct || v.Kind != yaml.SequenceNode {
			continue
		}
		for _, e := range v.Content {
			if e.Kind != yaml.MappingNode {
				continue // Decode says what is wrong
			}
			if err := checkKeys(e, f.Elem(), "each of "+k.Value); err != nil {
				return err
			}
		}
	}
	return nil
}

// tableKeys are the keys of a Rule that apply to a rule with a table.
var tableKeys = map[string]bool{"table": true, "columns": true, "unknown": true, "extra": true, "identity": true, "indexes": true}

// keyList lists the keys of fields, sorted; those of a rule with a table
// apart when rule: "device, endpoint, ...; with a table: columns, ...".
func keyList(fields map[string]reflect.Type, rule bool) string {
	var plain, table []string
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		if rule && tableKeys[k] {
			table = append(table, k)
		} else {
			plain = append(plain, k)
		}
	}
	s := strings.Join(plain, ", ")
	if len(table) > 0 {
		s += "; with a table: " + strings.Join(table, ", ")
	}
	return s
}

// yamlFields are the YAML keys of the struct t and their fields' types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	keys := map[string]reflect.Type{}
	for i := range t.NumField() {
		if k, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); k != "" {
			keys[k] = t.Field(i).Type
		}
	}
	return keys
}
