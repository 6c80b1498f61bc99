package cli

import "testing"

func TestParseBytes(t *testing.T) {
	for _, tt := range []struct {
		name string
		in   string
		want int64
		bad  bool
	}{
		{name: "empty is none", in: "", want: 0},
		{name: "bytes", in: "4096", want: 4096},
		{name: "bytes with B", in: "10B", want: 10},
		{name: "KiB", in: "64KiB", want: 64 << 10},
		{name: "MiB", in: "384MiB", want: 384 << 20},
		{name: "GiB", in: "2GiB", want: 2 << 30},
		{name: "negative", in: "-1MiB", bad: true},
		{name: "decimal units are not guessed", in: "384MB", bad: true},
		{name: "overflow", in: "9999999999TiB", bad: true},
		{name: "words", in: "lots", bad: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseBytes(tt.in)
			if (err != nil) != tt.bad || got != tt.want {
				t.Errorf("ParseBytes(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.bad)
			}
		})
	}
}
