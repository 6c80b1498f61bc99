package sparkplug_test

import (
	"context"
	"testing"
	"time"

	"firehose/internal/spbtest"
	"firehose/sparkplug"
)

// TestResolve: Resolve decodes a DATA against the births known now, says
// when it still does not resolve, and changes no state (the edge node's seq
// goes on from the messages Handle saw).
func TestResolve(t *testing.T) {
	ctx := context.Background()
	store := sparkplug.NewMemoryStore()
	tr := sparkplug.NewTracker(store)
	now := time.Now()
	const data = "spBv1.0/g/NDATA/e"
	msg := spbtest.Payload(now, 5, -1, spbtest.Alias(1, 1.5), spbtest.Alias(2, 2.5))

	got, err := tr.Resolve(ctx, data, msg)
	if err != nil || got.Rebirth == nil || got.Rebirth.Reason != sparkplug.NotBorn || len(got.Values) != 0 {
		t.Fatalf("before the birth: %+v, %v; want NotBorn and no values", got, err)
	}
	if _, err := tr.Handle(ctx, "spBv1.0/g/NBIRTH/e", spbtest.Payload(now, 0, 1, spbtest.Named("a", 1, 0))); err != nil {
		t.Fatal(err)
	}
	got, err = tr.Resolve(ctx, data, msg)
	if err != nil || got.Rebirth == nil || got.Rebirth.Reason != sparkplug.UnknownAlias || len(got.Rebirth.Aliases) != 1 || got.Rebirth.Aliases[0] != 2 {
		t.Fatalf("alias 2 unknown: %+v, %v; want UnknownAlias [2]", got, err)
	}
	if _, err := tr.Handle(ctx, "spBv1.0/g/NBIRTH/e", spbtest.Payload(now, 0, 2, spbtest.Named("a", 1, 0), spbtest.Named("b", 2, 0))); err != nil {
		t.Fatal(err)
	}
	got, err = tr.Resolve(ctx, data, msg)
	if err != nil || got.Rebirth != nil || len(got.Values) != 2 || got.Values[0].Name != "a" || got.Values[1].Name != "b" || got.Values[1].Number != 2.5 {
		t.Fatalf("after the rebirth: %+v, %v; want a and b, no rebirth (seq not checked)", got, err)
	}
	// The seq Resolve saw (5) was not recorded: the next DATA after the
	// birth (seq 1) is in sequence.
	next, err := tr.Handle(ctx, data, spbtest.Payload(now, 1, -1, spbtest.Alias(1, 3)))
	if err != nil || next.Rebirth != nil || len(next.Values) != 1 {
		t.Fatalf("DATA seq 1 after the birth: %+v, %v; want in sequence", next, err)
	}
}
