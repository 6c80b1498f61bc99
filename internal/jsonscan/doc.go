// Package jsonscan validates JSON and walks it in the same pass: one
// tokenizer for every edge of firehose (the HTTP endpoints and the MQTT
// payload decoder), so a body is read once, not once to validate and again
// to find its fields.
//
// It accepts exactly what encoding/json accepts (json.Valid), and a syntax
// error carries the same offset and the same words as encoding/json's
// *json.SyntaxError, so answers that quote them do not change. Like
// encoding/json it does not refuse invalid UTF-8 inside strings: it records
// where the first such byte is (Scanner.InvalidUTF8), and each caller decides
// how that ranks against other errors. What PostgreSQL's jsonb refuses in
// valid JSON (\u0000, unpaired surrogate escapes, numbers beyond a 64-bit
// float) it notes the same way, in the same pass, with the deepest nesting
// read before it (Scanner.Problem, Scanner.Deepest), so that a caller
// checks a body for PostgreSQL without reading it again.
//
// A Scanner reads values in place and returns slices of its input; it never
// allocates on success. Walk an object's members, descending where a path
// leads and skipping (but still validating) the rest:
//
//	var s jsonscan.Scanner
//	s.Reset(body)
//	if s.EnterObject() {
//		for key, ok := s.NextMember(); ok; key, ok = s.NextMember() {
//			val, kind, ok := s.Value() // the whole value, validated
//			...
//		}
//	}
//	if !s.End() {
//		return s.Err() // *jsonscan.SyntaxError
//	}
package jsonscan
