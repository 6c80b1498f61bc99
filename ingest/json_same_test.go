package ingest

// The differential check of issue 17, item 6: checkJSON's checks moved into
// the tokenizer. internal/jsonscan notes \u0000, unpaired surrogates, numbers
// beyond a float64 and the depth as it validates; ParseObject (and
// CheckPayload) keep beside a clean payload that it is clean and how deep it
// nests, and Validate does not read it again. The old code is kept below,
// verbatim but for its names: the new validation must accept and refuse
// exactly what it did, in the same words, on the fuzz corpora and seeds of
// the whole module and on random inputs.

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"firehose/internal/jsonscan"
)

// oldCheckJSON is checkJSON as it was before (commit 2b03e0e).
func oldCheckJSON(data []byte, maxDepth int) error {
	if !utf8.Valid(data) {
		return fieldErr("payload", "format", "is not valid UTF-8")
	}
	depth := 0
	for i := 0; i < len(data); i++ {
		switch c := data[i]; {
		case c == '{' || c == '[':
			depth++
			if depth > maxDepth {
				return fieldErr("payload", "too_deep", "nests objects and arrays deeper than %d levels", maxDepth)
			}
		case c == '}' || c == ']':
			depth--
		case c == '"':
			end, err := oldCheckString(data, i+1)
			if err != nil {
				return err
			}
			i = end
		case c == '-' || (c >= '0' && c <= '9'):
			j := i + 1
			for j < len(data) && strings.IndexByte("0123456789.eE+-", data[j]) >= 0 {
				j++
			}
			if _, err := strconv.ParseFloat(string(data[i:j]), 64); err != nil {
				return fieldErr("payload", "range", "number %.40s is out of the range of a 64-bit float", data[i:j])
			}
			i = j - 1
		}
	}
	return nil
}

// oldCheckEscapes is checkEscapes as it was before.
func oldCheckEscapes(data []byte, field string) error {
	for i := 0; i < len(data); i++ {
		if data[i] != '"' {
			continue
		}
		end, err := oldCheckString(data, i+1)
		if err != nil {
			if fe, ok := err.(*FieldError); ok {
				fe.Field = field
			}
			return err
		}
		i = end
	}
	return nil
}

// oldCheckString is checkString as it was before.
func oldCheckString(data []byte, i int) (int, error) {
	for ; i < len(data); i++ {
		switch data[i] {
		case '"':
			return i, nil
		case '\\':
			if i+1 < len(data) && data[i+1] == 'u' {
				r, ok := oldHex4(data, i+2)
				switch {
				case !ok:
					return 0, fieldErr("payload", "format", "has a malformed \\u escape")
				case r == 0:
					return 0, fieldErr("payload", "format", "contains the escape \\u0000, which PostgreSQL cannot store")
				case r >= 0xD800 && r < 0xDC00:
					lo, ok := rune(0), i+7 < len(data) && data[i+6] == '\\' && data[i+7] == 'u'
					if ok {
						lo, ok = oldHex4(data, i+8)
					}
					if !ok || lo < 0xDC00 || lo > 0xDFFF {
						return 0, fieldErr("payload", "format", "has an unpaired UTF-16 surrogate escape")
					}
					i += 11
					continue
				case r >= 0xDC00 && r <= 0xDFFF:
					return 0, fieldErr("payload", "format", "has an unpaired UTF-16 surrogate escape")
				}
				i += 5
				continue
			}
			i++
		}
	}
	return 0, fieldErr("payload", "format", "has an unterminated string")
}

func oldHex4(data []byte, i int) (rune, bool) {
	if i+4 > len(data) {
		return 0, false
	}
	v, err := strconv.ParseUint(string(data[i:i+4]), 16, 32)
	return rune(v), err == nil
}

// oldValidate is Validate as it was before: every check on the fields, then
// the payload read again by oldCheckJSON, whatever ParseObject found in it.
func oldValidate(r Reading, lim Limits) error {
	p := r.Payload
	r.Payload, r.checked = nil, payloadCheck{}
	if err := r.Validate(lim); err != nil || p == nil {
		return err
	}
	lim = lim.withDefaults()
	if len(p) > lim.MaxPayload {
		return fieldErr("payload", "too_long", "extra fields take %d bytes, more than the limit of %d", len(p), lim.MaxPayload)
	}
	return oldCheckJSON(p, lim.MaxDepth)
}

// errText is err's text, "<nil>" for none.
func errText(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

var sameRx = time.Date(2026, 11, 28, 8, 0, 0, 0, time.UTC)

// sameAsBefore fails t unless the new validation answers data as the old
// did, with the depth limit maxDepth, in every way the edges use it:
// checkJSON on data as a payload; checkEscapes on every string in it;
// ParseObject then Validate (with and without a device named by the topic),
// ReadObject then Validate on each item of an array; CheckPayload then
// Validate.
func sameAsBefore(t *testing.T, data []byte, maxDepth int) {
	t.Helper()
	if got, want := errText(checkJSON(data, maxDepth)), errText(oldCheckJSON(data, maxDepth)); got != want {
		t.Fatalf("checkJSON(%q, %d) = %s, before %s", data, maxDepth, got, want)
	}
	lim := Limits{MaxDepth: maxDepth, MaxPayload: 1 << 30}
	validate := func(how string, r Reading) {
		t.Helper()
		r.ReceivedAt = sameRx
		r.Normalize()
		if got, want := errText(r.Validate(lim)), errText(oldValidate(r, lim)); got != want {
			t.Fatalf("%s of %q, Validate (depth %d) = %s, before %s", how, data, maxDepth, got, want)
		}
		// The same reading with fields that pass, so that the payload's
		// check decides.
		r.DeviceID, r.Time, r.Metric, r.Value = "d", sameRx, "", 1
		if got, want := errText(r.Validate(lim)), errText(oldValidate(r, lim)); got != want {
			t.Fatalf("%s of %q with valid fields, Validate (depth %d) = %s, before %s", how, data, maxDepth, got, want)
		}
	}
	for _, preset := range []string{"", "pump-7"} {
		r := Reading{DeviceID: preset}
		if ParseObject(data, &r) == nil {
			validate("ParseObject", r)
		}
	}
	if !jsonscan.Valid(data) {
		return
	}
	var s jsonscan.Scanner
	s.Reset(data)
	for _, str := range jsonStrings(&s, nil) {
		if got, want := errText(checkEscapes(str, "f")), errText(oldCheckEscapes(str, "f")); got != want {
			t.Fatalf("checkEscapes(%q) = %s, before %s", str, got, want)
		}
	}
	s.Reset(data)
	if s.EnterArray() {
		for s.NextElement() {
			var r Reading
			if ReadObject(&s, &r) == nil {
				validate("ReadObject", r)
			}
		}
		if s.Err() != nil {
			t.Fatalf("walk of the valid array %q: %v", data, s.Err())
		}
	}
	r := Reading{DeviceID: "d", Value: 1, Payload: data}
	r.CheckPayload()
	validate("CheckPayload", r)
}

// jsonStrings appends every string of the value next in s, member names
// included, to out.
func jsonStrings(s *jsonscan.Scanner, out [][]byte) [][]byte {
	switch s.Peek() {
	case '{':
		s.EnterObject()
		for key, ok := s.NextMember(); ok; key, ok = s.NextMember() {
			out = jsonStrings(s, append(out, key))
		}
	case '[':
		s.EnterArray()
		for s.NextElement() {
			out = jsonStrings(s, out)
		}
	default:
		if v, kind, ok := s.Value(); ok && kind == jsonscan.String {
			out = append(out, v)
		}
	}
	return out
}

// corpus is every input of the module's fuzz tests: the files under each
// testdata/fuzz/ and the string literals in the Fuzz functions (their
// seeds), found from the module's root. depths are the small integers in
// the corpus files (FuzzCheckJSON's depth limits).
func corpus(t testing.TB) (inputs [][]byte, depths []int) {
	t.Helper()
	root := ".."
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("the module's root: %v", err)
	}
	literal := func(e ast.Expr) {
		switch lit := e.(type) {
		case *ast.BasicLit:
			switch lit.Kind {
			case token.STRING:
				if s, err := strconv.Unquote(lit.Value); err == nil {
					inputs = append(inputs, []byte(s))
				}
			case token.INT, token.CHAR:
				if v, err := strconv.ParseInt(lit.Value, 0, 64); err == nil && v > 0 && v < 64 {
					depths = append(depths, int(v))
				} else if c, _, _, err := strconv.UnquoteChar(strings.Trim(lit.Value, "'"), '\''); err == nil && c > 0 && c < 64 {
					depths = append(depths, int(c))
				}
			}
		}
	}
	files := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); name != ".." && (strings.HasPrefix(name, ".") || name == "bin" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		switch {
		case strings.Contains(filepath.ToSlash(path), "/testdata/fuzz/"):
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			lines := strings.Split(string(b), "\n")
			if len(lines) == 0 || !strings.HasPrefix(lines[0], "go test fuzz v1") {
				return nil
			}
			files++
			for _, line := range lines[1:] {
				if e, err := parser.ParseExpr(line); err == nil {
					if call, ok := e.(*ast.CallExpr); ok && len(call.Args) == 1 {
						literal(call.Args[0])
					}
				}
			}
		case strings.HasSuffix(path, "_test.go"):
			f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
			if err != nil {
				return err
			}
			for _, decl := range f.Decls {
				fn, ok := decl.(*ast.FuncDecl)
				if !ok || !strings.HasPrefix(fn.Name.Name, "Fuzz") || fn.Body == nil {
					continue
				}
				ast.Inspect(fn.Body, func(n ast.Node) bool {
					if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
						literal(lit)
					}
					return true
				})
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("read the fuzz corpora: %v", err)
	}
	if files < 50 || len(inputs) < 200 {
		t.Fatalf("only %d corpus files and %d inputs found: is the walk from the module's root?", files, len(inputs))
	}
	return inputs, depths
}

// randomJSON writes a random JSON value, at depth (1 for the top), heavy in
// what the checks look at: escapes, surrogates, numbers at float64's edge,
// nesting, the reading object's own fields.
func randomJSON(rng *rand.Rand, b []byte, depth int) []byte {
	space := func() {
		if rng.IntN(6) == 0 {
			b = append(b, " \t\n\r"[rng.IntN(4)])
		}
	}
	str := func() {
		b = append(b, '"')
		for n := rng.IntN(4); n > 0; n-- {
			b = append(b, []string{
				`a`, `é`, `\u0000`, `\ud83d\ude00`, `\uD83D\uDE00`, `\ud800`, `\udc00`, `\ud83d\u0041`, `\ud83d\ud83d`,
				`\ud83d\n`, `\\u0000`, `\\`, `\"`, `\n`, `\u00e9`, `\u0041`, `[`, `{`, `1e999`, "\ufffd", `\ufffd`,
			}[rng.IntN(21)]...)
		}
		b = append(b, '"')
	}
	switch k := rng.IntN(10); {
	case k < 3 && depth < 8:
		b = append(b, '{')
		for i, n := 0, rng.IntN(5); i < n; i++ {
			if i > 0 {
				b = append(b, ',')
			}
			space()
			if rng.IntN(3) == 0 {
				b = append(b, []string{`"device_id"`, `"reading"`, `"ts"`, `"msg_id"`, `"device\u005fid"`}[rng.IntN(5)]...)
			} else {
				str()
			}
			space()
			b = append(b, ':')
			space()
			b = randomJSON(rng, b, depth+1)
			space()
		}
		b = append(b, '}')
	case k < 5 && depth < 8:
		b = append(b, '[')
		for i, n := 0, rng.IntN(4); i < n; i++ {
			if i > 0 {
				b = append(b, ',')
			}
			space()
			b = randomJSON(rng, b, depth+1)
			space()
		}
		b = append(b, ']')
	case k < 7:
		str()
	case k < 9:
		b = append(b, []string{
			`0`, `-1`, `21.5`, `1e309`, `-1E+400`, `1e-400`, `0.5e309`, `1.7976931348623157e308`, `1.7976931348623159e308`,
			`1` + strings.Repeat("0", 308), `1` + strings.Repeat("0", 309), `0.` + strings.Repeat("0", 400) + `1e400`,
			`123456789e300`, `-0.0`, `5e-324`, `1e0308`, `1e00000000000000000000309`,
		}[rng.IntN(17)]...)
	default:
		b = append(b, []string{`true`, `false`, `null`, `"2026-11-28T08:00:00Z"`}[rng.IntN(4)]...)
	}
	return b
}

// mutate breaks data now and then, so that the inputs are not all JSON.
func mutate(rng *rand.Rand, data []byte) []byte {
	if len(data) == 0 {
		return data
	}
	switch rng.IntN(8) {
	case 0:
		return data[:rng.IntN(len(data))]
	case 1:
		i := rng.IntN(len(data))
		const junk = "\x00\xff\"\\,:[]{}-1eu"
		return append(data[:i:i], append([]byte{junk[rng.IntN(len(junk))]}, data[i:]...)...)
	case 2:
		data[rng.IntN(len(data))] = byte(rng.IntN(256))
	}
	return data
}

func TestValidationSameAsBefore(t *testing.T) {
	inputs, depths := corpus(t)
	limits := append([]int{1, 2, 3, 16, 20}, depths...)
	for _, data := range inputs {
		for _, d := range limits {
			sameAsBefore(t, data, d)
		}
	}
	rng := rand.New(rand.NewPCG(17, 6))
	n := 20000
	if testing.Short() {
		n = 2000
	}
	for i := 0; i < n; i++ {
		data := randomJSON(rng, nil, 1)
		if i%2 == 0 {
			// A reading object around it, so that ParseObject and its
			// payload see the same inputs.
			data = append(append([]byte(`{"device_id":"d","reading":1,"x":`), data...), '}')
		}
		data = mutate(rng, data)
		sameAsBefore(t, data, 1+rng.IntN(10))
	}
}

// FuzzValidationSameAsBefore: on any input the new validation answers as the
// old did (sameAsBefore). Its seeds are the module's fuzz corpora.
func FuzzValidationSameAsBefore(f *testing.F) {
	inputs, _ := corpus(f)
	for _, data := range inputs {
		f.Add(data, uint8(3))
	}
	f.Add([]byte(`{"device_id":"d","reading":1,"a":[[[1e309]]],"b":"\u0000"}`), uint8(3))
	f.Fuzz(func(t *testing.T, data []byte, depth uint8) {
		sameAsBefore(t, bytes.Clone(data), int(depth%20)+1)
	})
}
