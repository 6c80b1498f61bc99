package ingest_test

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"firehose/ingest"
)

func TestDeadLetterRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		d    ingest.DeadLetter
	}{
		{name: "empty", d: ingest.DeadLetter{ReceivedAt: time.Unix(0, 0).UTC(), Payload: []byte{}}},
		{name: "sparkplug", d: ingest.DeadLetter{Source: ingest.SourceMQTT, Kind: ingest.KindSparkplug, Topic: "spBv1.0/g/NDATA/e",
			ClientID: "e", Username: "e", Device: "g/e", Reason: "not born", ReceivedAt: time.Now().UTC(), Payload: []byte{0, 1, 0xff, '\n'}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ingest.DecodeDeadLetter(string(ingest.AppendDeadLetter(nil, &tc.d)))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Payload, tc.d.Payload) || !got.ReceivedAt.Equal(tc.d.ReceivedAt) {
				t.Fatalf("got %+v, want %+v", got, tc.d)
			}
			got.Payload, got.ReceivedAt = tc.d.Payload, tc.d.ReceivedAt
			if fmt.Sprint(got) != fmt.Sprint(tc.d) {
				t.Fatalf("got %+v, want %+v", got, tc.d)
			}
		})
	}
}

// FuzzDecodeDeadLetter: no body panics the decoder, and what decodes
// encodes back to the same bytes.
func FuzzDecodeDeadLetter(f *testing.F) {
	f.Add(string(ingest.AppendDeadLetter(nil, &ingest.DeadLetter{Topic: "t", Payload: []byte("x")})))
	f.Add("")
	f.Add("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff")
	f.Fuzz(func(t *testing.T, body string) {
		d, err := ingest.DecodeDeadLetter(body)
		if err != nil {
			if !errors.Is(err, ingest.ErrCorruptEntry) {
				t.Fatalf("error %v does not wrap ErrCorruptEntry", err)
			}
			return
		}
		// A varint may have more than one encoding: compare decoded values.
		again, err := ingest.DecodeDeadLetter(string(ingest.AppendDeadLetter(nil, &d)))
		if err != nil || fmt.Sprint(again) != fmt.Sprint(d) {
			t.Fatalf("round trip: %+v, %v; want %+v", again, err, d)
		}
	})
}
