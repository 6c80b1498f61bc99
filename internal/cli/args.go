package cli

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// IDs is a flag of positive row ids: repeated, or comma-separated
// (--id 4 --id 7, --id 4,7).
type IDs []int64

func (l *IDs) String() string {
	s := make([]string, len(*l))
	for i, id := range *l {
		s[i] = strconv.FormatInt(id, 10)
	}
	return strings.Join(s, ",")
}

// Set adds the ids of v.
func (l *IDs) Set(v string) error {
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		id, err := strconv.ParseInt(f, 10, 64)
		if err != nil || id <= 0 {
			return fmt.Errorf("%q is not a row id (a positive integer)", f)
		}
		*l = append(*l, id)
	}
	return nil
}

// ParseSince reads a point in time given as a positive duration back from
// now (24h, 90m) or as an RFC 3339 time.
func ParseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("want a positive duration (24h) or an RFC 3339 time (2026-11-28T08:00:00Z)")
}

// SetDefault changes a registered flag's default, without marking it set:
// the environment and the configuration file still apply.
func SetDefault(fs *flag.FlagSet, name, value string) {
	if f := fs.Lookup(name); f != nil {
		f.DefValue = value
		_ = f.Value.Set(value)
	}
}

// ShellQuote quotes s for a POSIX shell when it holds anything but plain
// characters, so that a printed command line can be pasted as it is.
func ShellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:@,=+") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
