package stream

import (
	"context"

	"firehose/ingest"
)

// Once: placeholder until h/once lands (delete on merge).
type Once struct {
	Session  string
	PacketID uint16
	Epoch    uint64
}

type SessionState struct{}

func NewSessionState(rdb any, s Streams, session string) *SessionState { return &SessionState{} }
func (*SessionState) Start(ctx context.Context, present bool) (map[uint16]uint64, error) {
	return map[uint16]uint64{}, nil
}
func (*SessionState) Release(ctx context.Context, pid uint16) (uint64, error) { return 0, nil }

func (p *Producer) AddOnce(ctx context.Context, rs []ingest.Reading, o Once) (bool, error) {
	return false, p.Add(ctx, rs)
}
func (p *Producer) AddDeadLetterOnce(ctx context.Context, d ingest.DeadLetter, o Once) (bool, error) {
	return false, p.AddDeadLetter(ctx, d)
}
