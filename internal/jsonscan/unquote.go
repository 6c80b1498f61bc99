package jsonscan

import (
	"bytes"
	"unicode/utf16"
	"unicode/utf8"
)

// AppendUnquote appends to dst the text of the JSON string quoted (its
// bytes as a Scanner returned them, quotes included) and returns the
// extended slice. It decodes as encoding/json does: an unpaired UTF-16
// surrogate escape and a byte that is not UTF-8 each become U+FFFD, and
// \u0000 becomes a NUL byte. (Refuse those first where they must not pass.)
// On bytes that are not a string token it appends what it can and never
// panics.
func AppendUnquote(dst, quoted []byte) []byte {
	if len(quoted) < 2 {
		return dst
	}
	s := quoted[1 : len(quoted)-1]
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s):
			i++
			switch e := s[i]; e {
			case 'b':
				dst = append(dst, '\b')
			case 'f':
				dst = append(dst, '\f')
			case 'n':
				dst = append(dst, '\n')
			case 'r':
				dst = append(dst, '\r')
			case 't':
				dst = append(dst, '\t')
			case 'u':
				r, ok := hex4(s, i+1)
				if !ok {
					return dst
				}
				i += 5
				if utf16.IsSurrogate(r) {
					if lo, ok := hex4(s, i+2); ok && i+1 < len(s) && s[i] == '\\' && s[i+1] == 'u' {
						if pair := utf16.DecodeRune(r, lo); pair != utf8.RuneError {
							dst = utf8.AppendRune(dst, pair)
							i += 6
							continue
						}
					}
					r = utf8.RuneError
				}
				dst = utf8.AppendRune(dst, r)
				continue
			default: // '"', '\\', '/'
				dst = append(dst, e)
			}
			i++
		case c < utf8.RuneSelf:
			dst = append(dst, c)
			i++
		default:
			r, size := utf8.DecodeRune(s[i:])
			if r == utf8.RuneError && size == 1 {
				dst = utf8.AppendRune(dst, utf8.RuneError)
			} else {
				dst = append(dst, s[i:i+size]...)
			}
			i += size
		}
	}
	return dst
}

// hex4 decodes the four hexadecimal digits at s[i:].
func hex4(s []byte, i int) (rune, bool) {
	if i < 0 || i+4 > len(s) {
		return 0, false
	}
	var r rune
	for _, c := range s[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// AppendCompact appends to dst the JSON value val, as a Scanner returned it,
// without insignificant white space, as json.Compact writes it.
func AppendCompact(dst, val []byte) []byte {
	if bytes.IndexAny(val, " \t\n\r") < 0 {
		return append(dst, val...)
	}
	inString := false
	for i := 0; i < len(val); i++ {
		c := val[i]
		switch {
		case inString:
			switch c {
			case '\\':
				if i+1 < len(val) {
					dst = append(dst, c)
					i++
					c = val[i]
				}
			case '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			continue
		}
		dst = append(dst, c)
	}
	return dst
}
