package deadletters

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"time"
)

// JSON is a row as `firehose rejected list --json` prints it.
type JSON struct {
	ID             int64        `json:"id"`
	Stream         string       `json:"stream"`
	EntryID        string       `json:"entry_id"`
	Version        *string      `json:"version"`
	RejectedAt     time.Time    `json:"rejected_at"`
	Error          string       `json:"error"`
	Status         string       `json:"status"` // pending, replayed, refused_again
	Raw            []byte       `json:"raw"`    // base64
	Reading        *ReadingJSON `json:"reading,omitempty"`
	DecodeError    string       `json:"decode_error,omitempty"`
	ReplayedAt     *time.Time   `json:"replayed_at"`
	ReplayedStream *string      `json:"replayed_stream"`
	ReplayedEntry  *string      `json:"replayed_entry"`
	ReplayOf       *int64       `json:"replay_of"`
	RefusedAgainAs *int64       `json:"refused_again_as"`
	// Source is "bridge" (an entry the bridge could not write) or "edge"
	// (an edge dead letter, whose message the fields below describe; Raw
	// is its payload).
	Source     string     `json:"source"`
	EdgeKind   *string    `json:"edge_kind,omitempty"`
	Topic      *string    `json:"topic,omitempty"`
	ClientID   *string    `json:"client_id,omitempty"`
	Username   *string    `json:"username,omitempty"`
	DeviceID   *string    `json:"device_id,omitempty"`
	ReceivedAt *time.Time `json:"received_at,omitempty"`
}

// ReadingJSON is a decoded entry. Reading is a number, or a string ("NaN",
// "+Inf") for what JSON cannot hold; Payload is the extra fields when they
// are JSON, PayloadText when they are not.
type ReadingJSON struct {
	DeviceID    string          `json:"device_id"`
	Reading     any             `json:"reading"`
	TS          time.Time       `json:"ts"`
	ReceivedAt  time.Time       `json:"received_at"`
	Payload     json.RawMessage `json:"payload,omitempty"`
	PayloadText string          `json:"payload_text,omitempty"`
	// Table and Row, for a row of a typed table: the table it goes to and
	// its columns' values (see RowValue); Reading is then unused.
	Table string         `json:"table,omitempty"`
	Row   map[string]any `json:"row,omitempty"`
}

// JSON is the row in its JSON form, its entry decoded where it decodes.
func (r *Row) JSON() JSON {
	j := JSON{ID: r.ID, Stream: r.Stream, EntryID: r.EntryID, Version: r.Version, RejectedAt: r.RejectedAt,
		Error: r.Error, Status: r.Status(), Raw: r.Raw, ReplayedAt: r.ReplayedAt, ReplayedStream: r.ReplayedStream,
		ReplayedEntry: r.ReplayedEntry, ReplayOf: r.ReplayOf, RefusedAgainAs: r.RefusedAs, Source: r.Source,
		EdgeKind: r.EdgeKind, Topic: r.Topic, ClientID: r.ClientID, Username: r.Username, DeviceID: r.DeviceID, ReceivedAt: r.ReceivedAt}
	if r.Edge() {
		return j
	}
	rd, err := r.Decoded()
	if err != nil {
		j.DecodeError = err.Error()
		return j
	}
	rj := &ReadingJSON{DeviceID: rd.DeviceID, Reading: rd.Value, TS: rd.Time, ReceivedAt: rd.ReceivedAt}
	if rd.Row != nil {
		rj.Table, rj.Row = rd.Row.Shape.Table, make(map[string]any, len(rd.Row.Values))
		for i, c := range rd.Row.Shape.Columns {
			rj.Row[c.Name] = RowValue(c.Type, &rd.Row.Values[i])
		}
	}
	if math.IsNaN(rd.Value) || math.IsInf(rd.Value, 0) {
		rj.Reading = strconv.FormatFloat(rd.Value, 'g', -1, 64)
	}
	if rd.Payload != nil {
		if json.Valid(rd.Payload) {
			rj.Payload = rd.Payload
		} else {
			rj.PayloadText = strings.ToValidUTF8(string(rd.Payload), "\uFFFD")
		}
	}
	j.Reading = rj
	return j
}
