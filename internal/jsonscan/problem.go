package jsonscan

// Problem is a kind of JSON that encoding/json accepts and PostgreSQL's
// jsonb refuses. A Scanner does not refuse it: like invalid UTF-8 it notes
// the first one it reads (Scanner.Problem) in the same pass, and the caller
// decides.
type Problem byte

// The problems a Scanner notes.
const (
	NoProblem     Problem = iota
	NULEscape             // the escape \u0000
	LoneSurrogate         // a UTF-16 surrogate escape not in a high-low pair
	BigNumber             // a number beyond a 64-bit float (strconv.ErrRange)
)

// Problem returns the first problem read since Reset or ForgetProblems, or
// NoProblem, and its bytes in the input: the escape (six bytes) or the
// number.
func (s *Scanner) Problem() (Problem, []byte) {
	if s.prob == NoProblem {
		return NoProblem, nil
	}
	return s.prob, s.data[s.probStart:s.probEnd]
}

// Deepest is the deepest nesting of objects and arrays entered since Reset
// or ForgetProblems, before the first problem when there is one (a
// checker that stops at the first of a problem or a depth beyond its limit
// compares it with the limit first). It counts from the top of the input,
// as SetMaxDepth does.
func (s *Scanner) Deepest() int {
	if s.prob != NoProblem {
		return s.probDeepest
	}
	return s.deepest
}

// ForgetProblems clears the record of problems and of the deepest nesting,
// so that Problem and Deepest tell what is read from here on (Deepest
// counting from the present depth).
func (s *Scanner) ForgetProblems() {
	s.prob = NoProblem
	s.deepest = s.depth
}

// note records p at data[start:end] unless a problem is noted already.
func (s *Scanner) note(p Problem, start, end int) {
	if s.prob == NoProblem {
		s.prob, s.probStart, s.probEnd, s.probDeepest = p, start, end, s.deepest
	}
}

// uEscape notes a problem in the \u escape at i (its backslash; its four
// hexadecimal digits are checked) and returns the offset past it, past the
// low half too when it starts a surrogate pair.
func (s *Scanner) uEscape(i int) int {
	d := s.data
	r, _ := hex4(d, i+2)
	switch {
	case r == 0:
		s.note(NULEscape, i, i+6)
	case r >= 0xD800 && r < 0xDC00:
		if i+12 <= len(d) && d[i+6] == '\\' && d[i+7] == 'u' {
			if lo, ok := hex4(d, i+8); ok && lo >= 0xDC00 && lo <= 0xDFFF {
				return i + 12
			}
		}
		s.note(LoneSurrogate, i, i+6)
	case r >= 0xDC00 && r <= 0xDFFF:
		s.note(LoneSurrogate, i, i+6)
	}
	return i + 6
}
