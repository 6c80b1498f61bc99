package main

import (
	"errors"

	"gopkg.in/yaml.v3"
)

// rulesKey is the configuration file's top-level key for mapping rules
// (issue 11): how a topic or endpoint and its payload become readings.
const rulesKey = "rules"

// errNoRules refuses a rules: section until this build can apply one.
var errNoRules = errors.New("mapping rules are not supported by this build yet: remove the rules: section (readings use the default mapping)")

// decodeRules is where the configuration file's rules: section plugs in:
// cli.FlagSet calls it with the section's YAML node (lines included) while
// the file is read, before the flags are validated. A rule that cannot work
// must be refused here, with its line (return a *cli.FileError; any other
// error is reported at the rules: line), so that serve refuses it at start
// and config check shows it. config check maps its sample with the edges'
// own code (mqttSample, httpSample in config.go): rules applied by the edges
// show there without more work. Until rules exist the section is refused.
func (c *serveConfig) decodeRules(v *yaml.Node) error {
	return errNoRules
}
