package candidates

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"firehose/internal/jsonscan"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/tidwall/gjson"
	"github.com/valyala/fastjson"
)

// The task each candidate does: validate the body and find the raw values
// of the reading's fields (the seed's id/reading/timestamp, the native
// device_id/reading/ts), counting the other members, as the edges do before
// they convert anything.
type fields struct {
	id, reading, ts []byte
	extras          int
}

func (f *fields) set(key, val []byte) {
	switch string(key) {
	case "id", "device_id":
		f.id = val
	case "reading":
		f.reading = val
	case "timestamp", "ts":
		f.ts = val
	default:
		f.extras++
	}
}

func scanFields(data []byte, f *fields) bool {
	var s jsonscan.Scanner
	s.Reset(data)
	if !s.EnterObject() {
		return false
	}
	return scanMembers(&s, f) && s.End() && s.InvalidUTF8() < 0
}

func scanMembers(s *jsonscan.Scanner, f *fields) bool {
	for key, ok := s.NextMember(); ok; key, ok = s.NextMember() {
		val, _, ok := s.Value()
		if !ok {
			return false
		}
		f.set(key[1:len(key)-1], val)
	}
	return s.Err() == nil
}

func scanArray(data []byte, fn func(f *fields)) bool {
	var s jsonscan.Scanner
	s.Reset(data)
	if !s.EnterArray() {
		return false
	}
	for s.NextElement() {
		var f fields
		if !s.EnterObject() || !scanMembers(&s, &f) {
			return false
		}
		fn(&f)
	}
	return s.End()
}

var textDec = jsontext.NewDecoder(bytes.NewReader(nil), jsontext.AllowDuplicateNames(true))

func jsontextMembers(d *jsontext.Decoder, f *fields) bool {
	if tok, err := d.ReadToken(); err != nil || tok.Kind() != '{' {
		return false
	}
	for d.PeekKind() != '}' {
		name, err := d.ReadValue()
		if err != nil {
			return false
		}
		key := name[1 : len(name)-1]
		val, err := d.ReadValue()
		if err != nil {
			return false
		}
		f.set(key, val)
	}
	_, err := d.ReadToken()
	return err == nil
}

func jsontextFields(data []byte, f *fields) bool {
	textDec.Reset(bytes.NewReader(data), jsontext.AllowDuplicateNames(true))
	return jsontextMembers(textDec, f)
}

func jsontextArray(data []byte, fn func(f *fields)) bool {
	textDec.Reset(bytes.NewReader(data), jsontext.AllowDuplicateNames(true))
	if tok, err := textDec.ReadToken(); err != nil || tok.Kind() != '[' {
		return false
	}
	for textDec.PeekKind() != ']' {
		var f fields
		if !jsontextMembers(textDec, &f) {
			return false
		}
		fn(&f)
	}
	_, err := textDec.ReadToken()
	return err == nil
}

var fastParser fastjson.Parser

func fastjsonMembers(v *fastjson.Value, f *fields) bool {
	o, err := v.Object()
	if err != nil {
		return false
	}
	o.Visit(func(key []byte, v *fastjson.Value) {
		f.set(key, v.MarshalTo(nil))
	})
	return true
}

func fastjsonFields(data []byte, f *fields) bool {
	v, err := fastParser.ParseBytes(data)
	return err == nil && fastjsonMembers(v, f)
}

func fastjsonArray(data []byte, fn func(f *fields)) bool {
	v, err := fastParser.ParseBytes(data)
	if err != nil {
		return false
	}
	a, err := v.Array()
	if err != nil {
		return false
	}
	for _, e := range a {
		var f fields
		if !fastjsonMembers(e, &f) {
			return false
		}
		fn(&f)
	}
	return true
}

func gjsonMembers(r gjson.Result, f *fields) {
	r.ForEach(func(k, v gjson.Result) bool {
		f.set([]byte(k.Str), []byte(v.Raw))
		return true
	})
}

func gjsonFields(data []byte, f *fields) bool {
	if !gjson.ValidBytes(data) {
		return false
	}
	gjsonMembers(gjson.ParseBytes(data), f)
	return true
}

func gjsonArray(data []byte, fn func(f *fields)) bool {
	if !gjson.ValidBytes(data) {
		return false
	}
	gjson.ParseBytes(data).ForEach(func(_, v gjson.Result) bool {
		var f fields
		gjsonMembers(v, &f)
		fn(&f)
		return true
	})
	return true
}

var bodies = func() []struct{ name, body string } {
	item := `{"device_id":"pump-%d","reading":21.5,"ts":"2026-11-28T08:00:00.123Z","battery":97}`
	items := make([]string, 100)
	for i := range items {
		items[i] = fmt.Sprintf(item, i)
	}
	return []struct{ name, body string }{
		{"seed", `{"id": 12345, "reading": 217, "timestamp": "2026-11-28T08:00:00.123Z"}`},
		{"v1-extras", `{"device_id":"pump-7","reading":21.5,"ts":"2026-11-28T08:00:00.123Z","battery":97,"status":"ok","fw":"1.4.2","rssi":-71}`},
		{"mqtt", `{"reading": 21.5, "ts": "2026-11-28T08:00:00.123Z", "battery": 97, "unit": "°C"}`},
		{"array-100", "[" + strings.Join(items, ",") + "]"},
	}
}()

var objectVia = []struct {
	name string
	fn   func([]byte, *fields) bool
}{
	{"today", todayFields}, {"jsonscan", scanFields}, {"jsontext", jsontextFields},
	{"fastjson", fastjsonFields}, {"gjson", gjsonFields},
}

var arrayVia = []struct {
	name string
	fn   func([]byte, func(*fields)) bool
}{
	{"today", todayArray}, {"jsonscan", scanArray}, {"jsontext", jsontextArray},
	{"fastjson", fastjsonArray}, {"gjson", gjsonArray},
}

// BenchmarkExtract runs each candidate on each body. Compare with
//
//	benchstat -col /via cand.txt
func BenchmarkExtract(b *testing.B) {
	for _, body := range bodies {
		data := []byte(body.body)
		if data[0] == '[' {
			for _, via := range arrayVia {
				b.Run("body="+body.name+"/via="+via.name, func(b *testing.B) {
					b.SetBytes(int64(len(data)))
					b.ReportAllocs()
					n := 0
					count := func(f *fields) {
						if f.reading != nil {
							n++
						}
					}
					for b.Loop() {
						n = 0
						if !via.fn(data, count) || n != 100 {
							b.Fatalf("%s: %d readings", via.name, n)
						}
					}
				})
			}
			continue
		}
		for _, via := range objectVia {
			b.Run("body="+body.name+"/via="+via.name, func(b *testing.B) {
				b.SetBytes(int64(len(data)))
				b.ReportAllocs()
				var f fields
				for b.Loop() {
					f = fields{}
					if !via.fn(data, &f) || f.reading == nil {
						b.Fatalf("%s refused %s", via.name, data)
					}
				}
			})
		}
	}
}
