package main

import (
	"errors"

	"gopkg.in/yaml.v3"

	"firehose/internal/cli"
	"firehose/mapping"
)

// rulesKey is the configuration file's top-level key for mapping rules: how
// a topic or endpoint and its payload become readings (package mapping).
const rulesKey = "rules"

// decodeRules reads the configuration file's rules: section
// (mapping.DecodeYAML) and gives them to the broker and the gateway. A rule
// that cannot be read is refused with its line, so that serve refuses it at
// start and config check shows it.
func (c *serveConfig) decodeRules(v *yaml.Node) error {
	m, err := mapping.DecodeYAML(v)
	if le := (*mapping.LineError)(nil); errors.As(err, &le) {
		return &cli.FileError{Line: le.Line, Msg: le.Msg}
	}
	if err != nil {
		return err
	}
	c.MQTT.Rules, c.HTTP.Rules = m, m
	return nil
}
