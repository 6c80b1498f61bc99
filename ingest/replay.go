package ingest

import (
	"errors"
	"fmt"
	"strconv"
)

// Replay entries. `firehose rejected replay` re-submits a row of the bridge's
// readings_rejected table as a stream entry of three fields: FieldVersion
// names the encoding of FieldReplayBody (a reading encoded by AppendEncode),
// and FieldReplayOf is the id of the row it replays. The bridge writes the
// reading only if it can claim the row in the same transaction, so a row
// lands at most once however many replay entries name it.
//
// The body is not under FieldBody on purpose: a bridge that predates replays
// finds no body and rejects the entry (a new row of readings_rejected) rather
// than writing the reading without claiming the row, so a deployment in the
// middle of an upgrade cannot land a replay twice.
const (
	FieldReplayOf   = "replay_of"
	FieldReplayBody = "replay_body"
)

// ErrMalformedReplay means an entry names a replay (it has FieldReplayOf)
// but its fields are not those of a replay entry.
var ErrMalformedReplay = errors.New("malformed replay entry")

// Replay is the content of a replay entry.
type Replay struct {
	// Of is the id of the readings_rejected row replayed.
	Of int64
	// Version names the encoding of Body.
	Version string
	// Body is the encoded reading.
	Body string
}

// ReplayValues returns the fields of the replay entry of row of, whose
// reading is body (encoded by AppendEncode), ready for XADD.
func ReplayValues(of int64, body []byte) []any {
	return []any{FieldVersion, CodecVersion, FieldReplayOf, strconv.FormatInt(of, 10), FieldReplayBody, body}
}

// ReplayReading returns the fields of the replay entry of row of for the
// reading r, in the narrowest encoding it fits (ItemVersion): version 1,
// 3 when it names a metric, 6 when it is a typed row.
func ReplayReading(of int64, r *Reading) []any {
	item := ItemVersion(r)
	return []any{FieldVersion, item, FieldReplayOf, strconv.FormatInt(of, 10), FieldReplayBody, AppendItem(nil, item, r)}
}

// ParseReplay reads the fields of a stream entry. ok is false when the entry
// is not a replay entry (it has no FieldReplayOf); otherwise err, wrapping
// ErrMalformedReplay, says what is wrong with its fields, if anything.
func ParseReplay(values map[string]any) (rp Replay, ok bool, err error) {
	v, ok := values[FieldReplayOf]
	if !ok {
		return Replay{}, false, nil
	}
	of, _ := v.(string)
	if rp.Of, err = strconv.ParseInt(of, 10, 64); err != nil || rp.Of <= 0 {
		return Replay{}, true, fmt.Errorf("%w: %s %q is not a row id", ErrMalformedReplay, FieldReplayOf, of)
	}
	body, hasBody := values[FieldReplayBody].(string)
	if !hasBody {
		return Replay{}, true, fmt.Errorf("%w: no %q field", ErrMalformedReplay, FieldReplayBody)
	}
	rp.Version, _ = values[FieldVersion].(string)
	rp.Body = body
	return rp, true, nil
}

// ReplayReadings returns the fields of the replay entry of row of for rs,
// the readings one dead letter resolved to: ReplayReading's for one
// reading, else a batch body (version 2, 4 when one names a metric, 7 when
// one is a typed row) that the bridge lands whole with the row's claim, each
// reading at most once. A bridge that predates batch replays refuses such an
// entry (a new row of readings_rejected naming this one) and lands nothing
// of it.
func ReplayReadings(of int64, rs []Reading) []any {
	if len(rs) == 1 {
		return ReplayReading(of, &rs[0])
	}
	item := CodecVersion
	for i := range rs {
		item = Wider(item, ItemVersion(&rs[i]))
	}
	body := make([]byte, BatchHeaderLen, BatchHeaderLen+64*len(rs))
	for i := range rs {
		body = AppendBatchItemAs(body, item, &rs[i])
	}
	return []any{FieldVersion, BatchCodec(item), FieldReplayOf, strconv.FormatInt(of, 10), FieldReplayBody, FinishBatch(body, len(rs))}
}
