package jsonscan_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"firehose/internal/jsonscan"
)

// sameAsEncodingJSON fails t unless the Scanner judges data as encoding/json
// does: valid or not, and when not, the same offset and words.
func sameAsEncodingJSON(t *testing.T, data []byte) {
	t.Helper()
	var v any
	want := json.Unmarshal(data, &v)
	var s jsonscan.Scanner
	s.Reset(data)
	_, _, ok := s.Value()
	ok = ok && s.End()
	if got := jsonscan.Valid(data); got != ok || got != json.Valid(data) {
		t.Fatalf("Valid(%q) = %v, scan %v, json.Valid %v", data, got, ok, json.Valid(data))
	}
	var se *json.SyntaxError
	if !errors.As(want, &se) {
		if !ok {
			t.Fatalf("scan of %q: %v; encoding/json accepts it", data, s.Err())
		}
		return
	}
	got := s.SyntaxError()
	if got == nil {
		t.Fatalf("scan of %q accepted it; encoding/json: %v", data, se)
	}
	if got.Offset != se.Offset || got.Error() != se.Error() {
		t.Fatalf("scan of %q: at %d %q; encoding/json at %d %q", data, got.Offset, got, se.Offset, se)
	}
}

func TestSyntaxErrorsAsEncodingJSON(t *testing.T) {
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	tests := []struct{ name, in string }{
		{name: "empty", in: ``},
		{name: "space only", in: " \t\r\n"},
		{name: "object", in: `{"a": [1, -2.5e+3, "x", true, false, null, {}], "b": {"c": []}}`},
		{name: "scalars", in: `"s"`},
		{name: "not JSON", in: `reading=5`},
		{name: "truncated value", in: `{"id": 1, "reading": `},
		{name: "trailing comma in object", in: `{"id": 1,}`},
		{name: "trailing comma in array", in: `[1,]`},
		{name: "leading comma in object", in: `{,}`},
		{name: "leading comma in array", in: `[,1]`},
		{name: "missing colon", in: `{"a" 1}`},
		{name: "missing comma in object", in: `{"a":1 "b":2}`},
		{name: "missing comma in array", in: `[1 2]`},
		{name: "key not a string", in: `{a:1}`},
		{name: "single quotes", in: `{'a':1}`},
		{name: "NaN", in: `{"reading": NaN}`},
		{name: "Infinity", in: `-Infinity`},
		{name: "leading zero", in: `01`},
		{name: "leading zero in object", in: `{"a":01}`},
		{name: "plus sign", in: `+1`},
		{name: "lone minus", in: `-`},
		{name: "minus at the end of an array", in: `[-`},
		{name: "trailing dot", in: `1.`},
		{name: "dot then letter", in: `1.x`},
		{name: "exponent without digits", in: `1e`},
		{name: "exponent sign without digits", in: `[1e+]`},
		{name: "hex", in: `0x1p4`},
		{name: "truncated true", in: `tru`},
		{name: "misspelt false", in: `[fals]`},
		{name: "truncated null", in: `{"a":nu`},
		{name: "trailing garbage", in: `{"a":1} x`},
		{name: "two objects", in: `{}{}`},
		{name: "raw control character", in: "\"a\x01\""},
		{name: "raw NUL", in: "[\"\x00\"]"},
		{name: "bad escape", in: `"\x"`},
		{name: "short unicode escape", in: `"\u12"`},
		{name: "unicode escape at the end", in: `"\u12`},
		{name: "backslash at the end", in: `"\`},
		{name: "unterminated string", in: `"abc`},
		{name: "invalid UTF-8 in a string is valid", in: "\"\xff\""},
		{name: "invalid UTF-8 outside a string", in: "[\xff]"},
		{name: "NUL outside a string", in: "[1,\x00]"},
		{name: "quote character", in: `["a"'`},
		{name: "non-ASCII outside a string", in: "{\"a\":1}\xc2\xa0"},
		{name: "close without open", in: `]`},
		{name: "mismatched close", in: `[1}`},
		{name: "depth 10000", in: deep(10000)},
		{name: "depth 10001", in: deep(10001)},
		{name: "depth 10001 in an object", in: `{"id": 1, "x": ` + deep(20000) + `}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { sameAsEncodingJSON(t, []byte(tt.in)) })
	}
}

func TestInvalidUTF8(t *testing.T) {
	tests := []struct {
		in   string
		want int
	}{
		{in: `{"a":"b"}`, want: -1},
		{in: `{"é":"😀"}`, want: -1},
		{in: "{\"a\":\"b\xffc\",\"d\":\"\xfe\"}", want: 7},
		{in: "[\"\xc3\"]", want: 2},
		{in: "[\"\xed\xa0\x80\"]", want: 2}, // UTF-8 of a surrogate
	}
	for _, tt := range tests {
		var s jsonscan.Scanner
		s.Reset([]byte(tt.in))
		if _, _, ok := s.Value(); !ok {
			t.Fatalf("scan %q: %v", tt.in, s.Err())
		}
		if got := s.InvalidUTF8(); got != tt.want {
			t.Errorf("InvalidUTF8 of %q = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestWalkMembers(t *testing.T) {
	body := []byte(` {"id": 1, "nested": {"a": [1, {"b": "}"}]}, "s\u0074r": "x\"y", "n": null} `)
	var s jsonscan.Scanner
	s.Reset(body)
	if !s.EnterObject() {
		t.Fatalf("EnterObject: %v", s.Err())
	}
	var got []string
	for key, ok := s.NextMember(); ok; key, ok = s.NextMember() {
		val, kind, ok := s.Value()
		if !ok {
			t.Fatalf("Value: %v", s.Err())
		}
		got = append(got, string(jsonscan.AppendUnquote(nil, key))+"="+string(val)+"/"+kindName[kind])
	}
	if !s.End() {
		t.Fatalf("End: %v", s.Err())
	}
	want := []string{`id=1/number`, `nested={"a": [1, {"b": "}"}]}/object`, `str="x\"y"/string`, `n=null/null`}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("members = %q\nwant      %q", got, want)
	}
}

func TestIsNumber(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want bool
	}{
		{"0", true}, {"-0", true}, {"21.5", true}, {"1e3", true}, {"1.5E-2", true}, {"-12.25e+10", true},
		{"", false}, {"-", false}, {"+5", false}, {".5", false}, {"1.", false}, {"007", false}, {"1_000", false},
		{"0x1p4", false}, {"1e", false}, {"1e+", false}, {"1.e5", false}, {" 1", false}, {"1 ", false}, {"NaN", false},
	} {
		if got := jsonscan.IsNumber([]byte(tt.in)); got != tt.want {
			t.Errorf("IsNumber(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestAppendUnquote(t *testing.T) {
	for _, in := range []string{
		`""`, `"plain"`, `"\"\\\/\b\f\n\r\t"`, `"\u00e9\u20AC"`, `"\ud83d\ude00"`, `"\ud800"`, `"\udc00x"`,
		`"\ud800\ud800\udc00"`, `"\ud83d\u0041"`, `"\u0000"`, "\"a\xffb\"", "\"\xed\xa0\x80\"", `"é😀"`,
	} {
		var want string
		if err := json.Unmarshal([]byte(in), &want); err != nil {
			t.Fatalf("json.Unmarshal(%s): %v", in, err)
		}
		if got := string(jsonscan.AppendUnquote(nil, []byte(in))); got != want {
			t.Errorf("AppendUnquote(%s) = %q, want %q", in, got, want)
		}
	}
}

// firstInvalidUTF8 is the offset of the first byte of data that is not
// UTF-8, or -1.
func firstInvalidUTF8(data []byte) int {
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && size == 1 {
			return i
		}
		i += size
	}
	return -1
}

var kindName = map[jsonscan.Kind]string{
	jsonscan.Null: "null", jsonscan.False: "false", jsonscan.True: "true", jsonscan.Number: "number",
	jsonscan.String: "string", jsonscan.Object: "object", jsonscan.Array: "array",
}

// decode rebuilds the value at s as encoding/json's Decoder with UseNumber
// would, from what the Scanner returns: strings through AppendUnquote,
// numbers and literals from their bytes, objects member by member (the last
// of a repeated name wins, as in a map).
func decode(t *testing.T, s *jsonscan.Scanner) (any, bool) {
	switch s.Peek() {
	case '{':
		if !s.EnterObject() {
			return nil, false
		}
		m := map[string]any{}
		for key, ok := s.NextMember(); ok; key, ok = s.NextMember() {
			v, ok := decode(t, s)
			if !ok {
				return nil, false
			}
			m[string(jsonscan.AppendUnquote(nil, key))] = v
		}
		return m, s.Err() == nil
	case '[':
		if !s.EnterArray() {
			return nil, false
		}
		a := []any{}
		for s.NextElement() {
			v, ok := decode(t, s)
			if !ok {
				return nil, false
			}
			a = append(a, v)
		}
		return a, s.Err() == nil
	}
	raw, kind, ok := s.Value()
	if !ok {
		return nil, false
	}
	switch kind {
	case jsonscan.String:
		return string(jsonscan.AppendUnquote(nil, raw)), true
	case jsonscan.Number:
		return json.Number(raw), true
	case jsonscan.True:
		return true, true
	case jsonscan.False:
		return false, true
	case jsonscan.Null:
		return nil, true
	}
	t.Fatalf("Value returned kind %d for %q", kind, raw)
	return nil, false
}

// FuzzScanner: the Scanner never panics; it accepts exactly what
// encoding/json accepts, failing at the same offset with the same words;
// InvalidUTF8 finds invalid UTF-8 exactly when valid JSON holds some; and
// the values it extracts, walked member by member and unquoted, are the
// values encoding/json decodes.
func FuzzScanner(f *testing.F) {
	for _, s := range []string{
		`{"id": 1, "reading": 2, "timestamp": "2026-11-28T08:00:00Z"}`,
		`{"device_id":"pump-7","reading":21.5,"ts":"2026-11-28T08:00:00.123Z","battery":97,"tags":{"a":[1,2,{"b":null}]}}`,
		`[{"a":1},{"b":[true,false]}]`, `21.5`, `-0.5e-3`, `"\ud83d\ude00\u0000\ud800"`, "\"\xff\"", `{"a":1,}`,
		`[1 2]`, `tru`, `1.`, `-`, `{"a"`, `[[[[[[`, "{\"a\":\"\x01\"}", `{"\u0061":1,"a":2}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		sameAsEncodingJSON(t, data)
		if !json.Valid(data) {
			return
		}
		var s jsonscan.Scanner
		s.Reset(data)
		got, ok := decode(t, &s)
		if !ok || !s.End() {
			t.Fatalf("walk of valid %q: %v", data, s.Err())
		}
		if bad, want := s.InvalidUTF8(), firstInvalidUTF8(data); bad != want {
			t.Fatalf("InvalidUTF8 of %q = %d, want %d", data, bad, want)
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		var want any
		if err := dec.Decode(&want); err != nil {
			t.Fatalf("encoding/json decode of valid %q: %v", data, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("walk of %q gave %#v, encoding/json %#v", data, got, want)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, data); err != nil {
			t.Fatalf("json.Compact of valid %q: %v", data, err)
		}
		s.Reset(data)
		val, _, _ := s.Value()
		if got := jsonscan.AppendCompact(nil, val); !bytes.Equal(got, compact.Bytes()) {
			t.Fatalf("AppendCompact(%q) = %q, json.Compact %q", val, got, compact.Bytes())
		}
	})
}
