package jsonscan_test

import (
	"strings"
	"testing"

	"firehose/internal/jsonscan"
)

// BenchmarkValid validates bodies the edges read: a reading object with
// extra fields, and an array of 100 of them.
func BenchmarkValid(b *testing.B) {
	item := `{"device_id":"pump-7","reading":21.5,"ts":"2026-11-28T08:00:00.123Z","battery":97,"status":"ok","tags":{"zone":"a","shift":[1,2]}}`
	for _, bc := range []struct{ name, body string }{
		{"object", item},
		{"array-100", "[" + strings.TrimSuffix(strings.Repeat(item+",", 100), ",") + "]"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			body := []byte(bc.body)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if !jsonscan.Valid(body) {
					b.Fatal("not valid")
				}
			}
		})
	}
}
