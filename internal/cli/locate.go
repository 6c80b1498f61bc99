package cli

import (
	"fmt"
	"regexp"
)

// flagInError finds the flag a validation error names first.
var flagInError = regexp.MustCompile(`--([a-z0-9][a-z0-9-]*)`)

// Locate adds to a validation error where the value of the flag it names
// came from, when that is not the command line: the file's line (a
// *FileError), or the environment variable.
func (f *FlagSet) Locate(err error) error {
	m := flagInError.FindStringSubmatch(err.Error())
	if m == nil || f.Lookup(m[1]) == nil {
		return err
	}
	switch o := f.Origin(m[1]); o.Source {
	case FromFile:
		return &FileError{File: o.File, Line: o.Line, Msg: err.Error()}
	case FromEnvironment:
		return fmt.Errorf("%w (set by %s)", err, o.Env)
	}
	return err
}
