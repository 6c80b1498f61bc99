package candidates

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// todayFields is how firehose read a body before jsonscan (commit 30a0449,
// ingest/json.go): utf8.Valid, json.Valid, then a walk of its own over the
// members. Kept here, frozen, as the baseline.
func todayFields(data []byte, f *fields) bool {
	if !utf8.Valid(data) {
		return false
	}
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' || !json.Valid(data) {
		return false
	}
	for i := skipSpace(data, 1); data[i] != '}'; {
		keyEnd := stringEnd(data, i)
		key := data[i+1 : keyEnd-1]
		i = skipSpace(data, skipSpace(data, keyEnd)+1)
		valEnd := valueEnd(data, i)
		f.set(key, data[i:valEnd])
		i = skipSpace(data, valEnd)
		if data[i] == ',' {
			i = skipSpace(data, i+1)
		}
	}
	return true
}

// todayArray is the old /v1/readings array path: json.Decoder hands each
// item to the object walker, which validates it again.
func todayArray(data []byte, fn func(f *fields)) bool {
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil {
		return false
	}
	for dec.More() {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return false
		}
		var f fields
		if !todayFields(raw, &f) {
			return false
		}
		fn(&f)
	}
	_, err := dec.Token()
	return err == nil
}

func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

func stringEnd(data []byte, i int) int {
	for j := i + 1; j < len(data); j++ {
		switch data[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return len(data)
}

func valueEnd(data []byte, i int) int {
	switch data[i] {
	case '"':
		return stringEnd(data, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(data); j++ {
			switch data[j] {
			case '"':
				j = stringEnd(data, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return len(data)
	}
	j := i
	for j < len(data) && bytes.IndexByte([]byte(",}] \t\n\r"), data[j]) < 0 {
		j++
	}
	return j
}
