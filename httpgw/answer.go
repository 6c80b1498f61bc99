package httpgw

import (
	"cmp"
	"context"
	"errors"
	"net/http"
	"strconv"
	"unicode/utf8"

	"firehose/ingest"
)

// jsonContentType is shared by every answer; net/http only reads it.
var jsonContentType = []string{"application/json"}

// writeJSON sends body, a complete JSON document, with status code and
// returns code.
func writeJSON(w http.ResponseWriter, code int, body []byte) int {
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(code)
	_, _ = w.Write(body)
	return code
}

// apiError is a refusal the gateway decided itself, with its complete answer.
type apiError struct {
	code   int    // HTTP status
	reason string // reason label of firehose_http_readings_refused_total
	n      int    // readings refused; 0 means "count the request as one"
	body   []byte // the JSON answer
	close  bool   // close the connection after the answer
	// challenge is the WWW-Authenticate of a 401; "" means Bearer (an API
	// key).
	challenge string
	retry     bool // answer Retry-After: 1
}

func (e *apiError) Error() string { return string(e.body) }

// refusal makes an apiError answering {"error": msg}. extra, if not empty,
// holds more members to add to the object, starting with a comma.
func refusal(code int, reason, msg string, extra ...byte) *apiError {
	b := []byte(`{"error":`)
	b = appendJSONString(b, msg)
	b = append(b, extra...)
	b = append(b, '}')
	return &apiError{code: code, reason: reason, body: b}
}

// Refusals that need no details.
var (
	errMissingKey = refusal(http.StatusUnauthorized, reasonUnauthorized, "missing API key")
	errUnknownKey = refusal(http.StatusUnauthorized, reasonUnauthorized, "unknown API key")
)

var bodyCanceled = []byte(`{"error":"request cancelled before it was answered: retry"}`)

// producerRefusals are the Producer's errors a client should retry later:
// the readings were fine, the pipeline could not take them.
var producerRefusals = []error{ingest.ErrBacklogFull, ingest.ErrUnavailable, ingest.ErrOverloaded, ingest.ErrClosed}

// answerError writes the answer to a request that failed with err, counts the
// n readings it refused, and returns the status code. It is the one place
// where an error becomes an HTTP status:
//
//   - *apiError: the gateway's own refusal (400, 401, 403, 413, 415, 422).
//   - *http.MaxBytesError: 413.
//   - ErrBacklogFull, ErrUnavailable, ErrOverloaded, ErrClosed: 503 with
//     Retry-After: 1; the readings are fine, the client should resend them.
//   - context.Canceled / DeadlineExceeded (the gateway's own checks, such as
//     /health/db, when the client went away): 503, and the connection is
//     closed. A request never ends without an answer: net/http would send an
//     empty 200 for it.
//   - anything else: 500.
func (s *Server) answerError(w http.ResponseWriter, err error, n int) int {
	var ae *apiError
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &ae):
		if ae.n > 0 {
			n = ae.n
		}
		s.m.refuse(ae.reason, n)
		if ae.code == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", cmp.Or(ae.challenge, "Bearer"))
		}
		if ae.retry {
			w.Header().Set("Retry-After", "1")
		}
		if ae.close {
			w.Header().Set("Connection", "close")
		}
		return writeJSON(w, ae.code, ae.body)
	case errors.As(err, &tooLarge):
		s.m.refuse(reasonTooLarge, 1)
		return writeJSON(w, http.StatusRequestEntityTooLarge,
			refusal(0, "", "body larger than "+strconv.FormatInt(tooLarge.Limit, 10)+" bytes").body)
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		s.m.refuse(reasonCanceled, n)
		w.Header().Set("Connection", "close")
		return writeJSON(w, http.StatusServiceUnavailable, bodyCanceled)
	}
	for _, pe := range producerRefusals {
		if errors.Is(err, pe) {
			reason := ingest.RefusalReason(pe)
			s.m.refuse(reason, n)
			w.Header().Set("Retry-After", "1")
			// The sentinel's words, not err's: a wrapped Redis error would
			// tell clients about the inside of the deployment.
			extra := appendJSONString([]byte(`,"reason":`), reason)
			return writeJSON(w, http.StatusServiceUnavailable, refusal(0, "", pe.Error()+": retry later", extra...).body)
		}
	}
	s.m.refuse(reasonError, n)
	s.log.Debug("storing readings failed", "err", err, "readings", n)
	return writeJSON(w, http.StatusInternalServerError, []byte(`{"error":"internal error: the readings were not stored"}`))
}

// appendJSONString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
