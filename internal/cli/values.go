package cli

import (
	"fmt"
	"io"
	"log/slog"
	"math"
	"strconv"
	"strings"
)

// NewLogger is the logger of --log-level (debug, info, warn or error) and
// --log-format (text or json), writing to w.
func NewLogger(level, format string, w io.Writer) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// ParseBytes reads a size such as 512MiB, 2GiB, 64KiB or a plain number of
// bytes; "" is 0 (none).
func ParseBytes(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	num, unit := s, int64(1)
	for _, u := range []struct {
		suffix string
		size   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"B", 1}} {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			num, unit = n, u.size
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/unit {
		return 0, fmt.Errorf("want a size such as 384MiB, 2GiB or a number of bytes")
	}
	return n * unit, nil
}
