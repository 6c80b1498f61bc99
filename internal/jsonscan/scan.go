package jsonscan

import (
	"strconv"
	"unicode/utf8"
)

// MaxDepth is the deepest nesting of objects and arrays a Scanner accepts
// unless told otherwise (SetMaxDepth): encoding/json's limit.
const MaxDepth = 10000

// Kind is the kind of a JSON value, known from its first byte.
type Kind byte

// The kinds of JSON values.
const (
	Invalid Kind = iota
	Null
	False
	True
	Number
	String
	Object
	Array
)

// SyntaxError is a place where the input is not JSON. Offset and Error are
// those of the *json.SyntaxError that encoding/json reports for the same
// input: Offset counts the bytes read, the offending one included (the
// length of the input when it ends too early).
type SyntaxError struct {
	Offset int64
	msg    string
}

func (e *SyntaxError) Error() string { return e.msg }

// Scanner reads one JSON text in place. The zero Scanner reads an empty
// input; Reset gives it one. After the first syntax error every method
// returns false and Err reports it.
type Scanner struct {
	data     []byte
	pos      int
	depth    int
	maxDepth int
	open     bool // just past '{' or '[': the next member or element is the first
	badUTF8  int  // offset of the first invalid UTF-8 byte in a string, or -1
	err      *SyntaxError

	// What PostgreSQL would refuse, since Reset or ForgetProblems (see
	// Problem): the deepest nesting read, the first problem, and where it
	// is and how deep the input had nested before it.
	deepest     int
	prob        Problem
	probStart   int
	probEnd     int
	probDeepest int
}

// Reset makes s read data from its start, with the depth limit MaxDepth.
func (s *Scanner) Reset(data []byte) {
	*s = Scanner{data: data, maxDepth: MaxDepth, badUTF8: -1}
}

// SetMaxDepth sets how deep objects and arrays may nest from here on,
// counted from the top of the input. json.Decoder counts each value of a
// stream from that value: a caller walking an array's elements as such a
// stream raises the limit by one.
func (s *Scanner) SetMaxDepth(n int) { s.maxDepth = n }

// Pos is the offset of the next byte to read.
func (s *Scanner) Pos() int { return s.pos }

// Err is the syntax error met, a *SyntaxError, or nil.
func (s *Scanner) Err() error {
	if s.err == nil {
		return nil
	}
	return s.err
}

// SyntaxError is the syntax error met, or nil.
func (s *Scanner) SyntaxError() *SyntaxError { return s.err }

// InvalidUTF8 is the offset of the first byte inside a string read since
// Reset or ForgetInvalidUTF8 that is not UTF-8, or -1. (Outside strings such
// a byte is a syntax error.)
func (s *Scanner) InvalidUTF8() int { return s.badUTF8 }

// ForgetInvalidUTF8 clears the record of invalid UTF-8, so that
// InvalidUTF8 tells what is read from here on.
func (s *Scanner) ForgetInvalidUTF8() { s.badUTF8 = -1 }

// Peek skips white space and returns the next byte, or 0 at the end of the
// input. It does not consume the byte.
func (s *Scanner) Peek() byte {
	s.skipSpace()
	if s.pos < len(s.data) {
		return s.data[s.pos]
	}
	return 0
}

// Value reads the next value whole, validating it, and returns its bytes
// (without surrounding space) and kind.
func (s *Scanner) Value() ([]byte, Kind, bool) {
	if s.err != nil {
		return nil, Invalid, false
	}
	s.skipSpace()
	start := s.pos
	k, ok := s.value()
	if !ok {
		return nil, Invalid, false
	}
	return s.data[start:s.pos], k, true
}

// EnterObject reports whether the next value is an object, and consumes its
// '{' if so; read its members with NextMember. When the next value is not an
// object it returns false and consumes nothing (Err is nil unless the input
// ended or nested too deep).
func (s *Scanner) EnterObject() bool { return s.enter('{') }

// EnterArray is EnterObject for an array ('['); read its elements with
// NextElement and Value.
func (s *Scanner) EnterArray() bool { return s.enter('[') }

func (s *Scanner) enter(open byte) bool {
	if s.err != nil {
		return false
	}
	s.skipSpace()
	if s.pos >= len(s.data) {
		return s.fail("")
	}
	if s.data[s.pos] != open {
		return false
	}
	s.depth++
	if s.depth > s.maxDepth {
		return s.fail("exceeded max depth")
	}
	if s.depth > s.deepest {
		s.deepest = s.depth
	}
	s.pos++
	s.open = true
	return true
}

// NextMember reads the next member's name and the ':' after it, and returns
// the name as its quoted bytes (escapes left in: see AppendUnquote); read
// the value next, with Value or EnterObject/EnterArray. At the end of the
// object it consumes the '}' and returns false; it also returns false on a
// syntax error (see Err).
func (s *Scanner) NextMember() ([]byte, bool) {
	if s.err != nil {
		return nil, false
	}
	s.skipSpace()
	if s.pos >= len(s.data) {
		return nil, s.fail("")
	}
	c := s.data[s.pos]
	switch {
	case c == '}':
		s.open = false
		s.pos++
		s.depth--
		return nil, false
	case s.open:
		s.open = false
	case c == ',':
		s.pos++
		s.skipSpace()
		if s.pos >= len(s.data) {
			return nil, s.fail("")
		}
		c = s.data[s.pos]
		if c == '}' {
			return nil, s.fail("looking for beginning of object key string")
		}
	default:
		return nil, s.fail("after object key:value pair")
	}
	if c != '"' {
		return nil, s.fail("looking for beginning of object key string")
	}
	start := s.pos
	if !s.str() {
		return nil, false
	}
	key := s.data[start:s.pos]
	s.skipSpace()
	if s.pos >= len(s.data) || s.data[s.pos] != ':' {
		return nil, s.fail("after object key")
	}
	s.pos++
	return key, true
}

// NextElement reports whether another element follows in the array being
// read (it consumes the ',' before it); read it with Value or
// EnterObject/EnterArray. At the end of the array it consumes the ']' and
// returns false; it also returns false on a syntax error (see Err).
func (s *Scanner) NextElement() bool {
	if s.err != nil {
		return false
	}
	s.skipSpace()
	if s.pos >= len(s.data) {
		return s.fail("")
	}
	c := s.data[s.pos]
	first := s.open
	s.open = false
	switch {
	case c == ']':
		s.pos++
		s.depth--
		return false
	case first:
		return true
	case c == ',':
		s.pos++
		return true
	}
	return s.fail("after array element")
}

// End reports whether nothing but white space follows what was read, and
// no syntax error was met.
func (s *Scanner) End() bool {
	if s.err != nil {
		return false
	}
	s.skipSpace()
	if s.pos < len(s.data) {
		return s.fail("after top-level value")
	}
	return true
}

// Valid reports whether data is one JSON value with optional white space
// around it, as json.Valid does.
func Valid(data []byte) bool {
	var s Scanner
	s.Reset(data)
	_, _, ok := s.Value()
	return ok && s.End()
}

// IsNumber reports whether b is exactly a number in JSON's grammar,
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?.
func IsNumber(b []byte) bool {
	if len(b) == 0 || (b[0] != '-' && (b[0] < '0' || b[0] > '9')) {
		return false
	}
	var s Scanner
	s.Reset(b)
	return s.number() && s.pos == len(b)
}

func (s *Scanner) skipSpace() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// fail records the syntax error of the byte at s.pos, which context
// describes as encoding/json does, or of the end of the input, and returns
// false.
func (s *Scanner) fail(context string) bool {
	if s.pos >= len(s.data) {
		s.err = &SyntaxError{Offset: int64(len(s.data)), msg: "unexpected end of JSON input"}
		return false
	}
	s.err = &SyntaxError{Offset: int64(s.pos) + 1, msg: "invalid character " + quoteChar(s.data[s.pos]) + " " + context}
	return false
}

// failInToken is fail inside a number, a literal or an escape, where
// encoding/json reads the end of the input as a space that does not belong.
func (s *Scanner) failInToken(context string) bool {
	if s.pos >= len(s.data) {
		s.err = &SyntaxError{Offset: int64(len(s.data)), msg: "invalid character ' ' " + context}
		return false
	}
	return s.fail(context)
}

// quoteChar formats c as encoding/json's scanner does.
func quoteChar(c byte) string {
	switch c {
	case '\'':
		return `'\''`
	case '"':
		return `'"'`
	}
	q := strconv.Quote(string(rune(c)))
	return "'" + q[1:len(q)-1] + "'"
}

// value reads the value at s.pos, white space before it already skipped.
func (s *Scanner) value() (Kind, bool) {
	if s.pos >= len(s.data) {
		return Invalid, s.fail("")
	}
	switch c := s.data[s.pos]; {
	case c == '"':
		return String, s.str()
	case c == '{':
		return Object, s.skipObject()
	case c == '[':
		return Array, s.skipArray()
	case c == '-' || (c >= '0' && c <= '9'):
		return Number, s.number()
	case c == 't':
		return True, s.literal("true")
	case c == 'f':
		return False, s.literal("false")
	case c == 'n':
		return Null, s.literal("null")
	}
	return Invalid, s.fail("looking for beginning of value")
}

func (s *Scanner) skipObject() bool {
	if !s.EnterObject() {
		return false
	}
	for {
		if _, ok := s.NextMember(); !ok {
			return s.err == nil
		}
		s.skipSpace()
		if _, ok := s.value(); !ok {
			return false
		}
	}
}

func (s *Scanner) skipArray() bool {
	if !s.EnterArray() {
		return false
	}
	for s.NextElement() {
		s.skipSpace()
		if _, ok := s.value(); !ok {
			return false
		}
	}
	return s.err == nil
}

// plain marks the bytes a string holds as they are: not '"', '\\', a
// control character or the start of a multi-byte UTF-8 sequence.
var plain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// str reads the string whose opening quote is at s.pos.
func (s *Scanner) str() bool {
	d := s.data
	i := s.pos + 1
	for i < len(d) {
		c := d[i]
		if plain[c] {
			i++
			continue
		}
		switch {
		case c == '"':
			s.pos = i + 1
			return true
		case c == '\\':
			i++
			if i >= len(d) {
				s.pos = i
				return s.failInToken("in string escape code")
			}
			switch d[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i++
			case 'u':
				for j := i + 1; j <= i+4; j++ {
					if j >= len(d) || !isHex(d[j]) {
						s.pos = j
						return s.failInToken(`in \u hexadecimal character escape`)
					}
				}
				if h := d[i+1]; h == '0' || h == 'd' || h == 'D' {
					i = s.uEscape(i - 1) // \u0000 or a surrogate, maybe
					continue
				}
				i += 5
			default:
				s.pos = i
				return s.fail("in string escape code")
			}
		case c < 0x20:
			s.pos = i
			return s.fail("in string literal")
		default:
			r, size := utf8.DecodeRune(d[i:])
			if r == utf8.RuneError && size == 1 && s.badUTF8 < 0 {
				s.badUTF8 = i
			}
			i += size
		}
	}
	s.pos = i
	return s.fail("")
}

// number reads the number starting at s.pos (a '-' or a digit), and notes
// it when a 64-bit float cannot hold it.
func (s *Scanner) number() bool {
	d := s.data
	start := s.pos
	i := start
	if d[i] == '-' {
		i++
		if i >= len(d) || !isDigit(d[i]) {
			s.pos = i
			return s.failInToken("in numeric literal")
		}
	}
	intStart := i
	if d[i] == '0' {
		i++
	} else {
		i = digits(d, i)
	}
	// The number is below 10^mag in magnitude; below 10^308 it is in the
	// range of a float64, and only then is strconv.ParseFloat spared.
	mag := i - intStart
	if i < len(d) && d[i] == '.' {
		i++
		if i >= len(d) || !isDigit(d[i]) {
			s.pos = i
			return s.failInToken("after decimal point in numeric literal")
		}
		i = digits(d, i)
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		neg := false
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			neg = d[i] == '-'
			i++
		}
		if i >= len(d) || !isDigit(d[i]) {
			s.pos = i
			return s.failInToken("in exponent of numeric literal")
		}
		exp := 0
		for ; i < len(d) && isDigit(d[i]); i++ {
			if exp < 1<<20 {
				exp = exp*10 + int(d[i]-'0')
			}
		}
		if neg {
			mag -= exp
		} else {
			mag += exp
		}
	}
	s.pos = i
	if mag > 308 && s.prob == NoProblem {
		if _, err := strconv.ParseFloat(string(d[start:i]), 64); err != nil {
			s.note(BigNumber, start, i) // strconv.ErrRange: JSON's grammar is ParseFloat's
		}
	}
	return true
}

// literal reads true, false or null, word, starting at s.pos.
func (s *Scanner) literal(word string) bool {
	for j := 1; j < len(word); j++ {
		if i := s.pos + j; i >= len(s.data) || s.data[i] != word[j] {
			s.pos = i
			return s.failInToken("in literal " + word + " (expecting '" + word[j:j+1] + "')")
		}
	}
	s.pos += len(word)
	return true
}

func digits(d []byte, i int) int {
	for i < len(d) && isDigit(d[i]) {
		i++
	}
	return i
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}
