package sparkplug

import (
	"encoding/json"
	"testing"
)

// FuzzDecodePayload: no input panics the decoder, the conversion or the
// tracker, and whatever decodes converts to JSON-able values.
func FuzzDecodePayload(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodePayload(b)
		if err != nil {
			if p != nil {
				t.Fatalf("payload %+v with error %v", p, err)
			}
			return
		}
		for i := range p.Metrics {
			m := &p.Metrics[i]
			for _, dt := range []DataType{m.Datatype, Int8, Int64, UInt64, Float, StringArray, BooleanArray, DoubleArray} {
				c, err := Convert(dt, m)
				if err != nil {
					continue
				}
				if _, err := json.Marshal(c.Other); err != nil {
					t.Fatalf("datatype %s: Other %#v is not JSON-able: %v", dt, c.Other, err)
				}
			}
		}
		tr := NewTracker(NewMemoryStore())
		for _, topic := range []string{"spBv1.0/g/NBIRTH/e", "spBv1.0/g/NDATA/e", "spBv1.0/g/DBIRTH/e/d", "spBv1.0/g/DDATA/e/d", "spBv1.0/g/DDEATH/e/d", "spBv1.0/g/NDEATH/e"} {
			if _, err := tr.Handle(t.Context(), topic, b); err != nil {
				return
			}
		}
	})
}

// props8 is a metric whose properties nest MaxDepth-1 deep.
func props8() []byte {
	var set []byte
	for range MaxDepth - 1 {
		v := append([]byte{0x4a}, byte(len(set)))
		v = append(v, set...)
		set = append([]byte{0x0a, 0x01, 'k', 0x12, byte(len(v))}, v...)
	}
	return append(append(name2("m"), 0x4a, byte(len(set))), set...)
}
