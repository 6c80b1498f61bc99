package jsonscan_test

import (
	"strings"
	"testing"

	"firehose/internal/jsonscan"
)

func TestProblem(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    jsonscan.Problem
		text    string
		deepest int
	}{
		{name: "none", in: `{"a":[1,{"b":"\u00e9\ud83d\ude00"}],"c":1e308}`, deepest: 3},
		{name: "NUL", in: `["x\u0000y"]`, want: jsonscan.NULEscape, text: `\u0000`, deepest: 1},
		{name: "escaped backslash before u0000 text", in: `["\\u0000"]`, deepest: 1},
		{name: "NUL in a key", in: `{"\u0000":1}`, want: jsonscan.NULEscape, text: `\u0000`, deepest: 1},
		{name: "lone high", in: `"\ud800"`, want: jsonscan.LoneSurrogate, text: `\ud800`},
		{name: "lone low", in: `"\uDC00"`, want: jsonscan.LoneSurrogate, text: `\uDC00`},
		{name: "high then high", in: `"\ud83d\ud83d\ude00"`, want: jsonscan.LoneSurrogate, text: `\ud83d`},
		{name: "high then other escape", in: `"\ud83d\n"`, want: jsonscan.LoneSurrogate, text: `\ud83d`},
		{name: "number beyond float64", in: `[[1],[[-1E+400]]]`, want: jsonscan.BigNumber, text: `-1E+400`, deepest: 3},
		{name: "huge integer", in: `1` + strings.Repeat("0", 309), want: jsonscan.BigNumber, text: `1` + strings.Repeat("0", 309)},
		{name: "largest float64", in: `[1.7976931348623157e308,1` + strings.Repeat("0", 308) + `]`, deepest: 1},
		{name: "underflow is zero", in: `1e-400`},
		{name: "the first problem counts, and the depth before it", in: `[[1],"\u0000",[[[1e999]]]]`, want: jsonscan.NULEscape, text: `\u0000`, deepest: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s jsonscan.Scanner
			s.Reset([]byte(tt.in))
			if _, _, ok := s.Value(); !ok || !s.End() {
				t.Fatalf("not valid: %v", s.Err())
			}
			p, text := s.Problem()
			if p != tt.want || string(text) != tt.text || s.Deepest() != tt.deepest {
				t.Errorf("Problem() = %d %q, Deepest() = %d; want %d %q, %d", p, text, s.Deepest(), tt.want, tt.text, tt.deepest)
			}
		})
	}
}

// TestForgetProblems: a caller walking members learns what each one holds.
func TestForgetProblems(t *testing.T) {
	var s jsonscan.Scanner
	s.Reset([]byte(`{"a":"\u0000","b":[[1]],"c":1}`))
	s.EnterObject()
	type found struct {
		p       jsonscan.Problem
		deepest int
	}
	var got []found
	s.ForgetProblems()
	for _, ok := s.NextMember(); ok; _, ok = s.NextMember() {
		s.Value()
		p, _ := s.Problem()
		got = append(got, found{p, s.Deepest()})
		s.ForgetProblems()
	}
	want := []found{{jsonscan.NULEscape, 1}, {jsonscan.NoProblem, 3}, {jsonscan.NoProblem, 1}}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("member %d: %v, want %v", i, got[i], want[i])
		}
	}
}
