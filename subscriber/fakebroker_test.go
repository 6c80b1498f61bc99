package subscriber_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// fakeBroker is one connection of a scripted MQTT 3.1.1 broker.
type fakeBroker struct {
	conn net.Conn
	r    *bufio.Reader
	// within, when set, bounds the wait for each answer of the
	// subscriber.
	within time.Duration
}

// acceptSession accepts a connection, answers its CONNECT (with the session
// present or not) and its SUBSCRIBE (granted QoS 2).
func acceptSession(ln net.Listener, present bool) (*fakeBroker, error) {
	b, sub, err := accept(ln, present)
	if err != nil {
		return nil, err
	}
	return b, b.suback(sub, 2)
}

// accept accepts a connection, answers its CONNECT (with the session present
// or not) and reads its SUBSCRIBE.
func accept(ln net.Listener, present bool) (*fakeBroker, packets.Packet, error) {
	conn, err := ln.Accept()
	if err != nil {
		return nil, packets.Packet{}, err
	}
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	b := &fakeBroker{conn: conn, r: bufio.NewReader(conn)}
	if _, err := b.read(packets.Connect); err != nil {
		return nil, packets.Packet{}, err
	}
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}, ProtocolVersion: 4, SessionPresent: present}
	if err := b.write(ack, ack.ConnackEncode); err != nil {
		return nil, packets.Packet{}, err
	}
	sub, err := b.read(packets.Subscribe)
	return b, sub, err
}

// suback answers sub with code (a granted QoS, or a refusal from 0x80) for
// each filter.
func (b *fakeBroker) suback(sub packets.Packet, code byte) error {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Suback}, ProtocolVersion: 4, PacketID: sub.PacketID,
		ReasonCodes: bytes.Repeat([]byte{code}, len(sub.Filters))}
	return b.write(pk, pk.SubackEncode)
}

// publish sends a PUBLISH of payload at qos with packet id pid and the DUP
// flag dup.
func (b *fakeBroker) publish(qos byte, pid uint16, dup bool, payload string) error {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Dup: dup}, ProtocolVersion: 4,
		PacketID: pid, TopicName: "devices/d1/readings", Payload: []byte(payload)}
	return b.write(pk, pk.PublishEncode)
}

// exchange sends a PUBLISH of payload at qos with packet id pid and the
// DUP flag dup, and completes it: PUBACK at QoS 1; PUBREC, PUBREL, PUBCOMP
// at QoS 2.
func (b *fakeBroker) exchange(qos byte, pid uint16, dup bool, payload string) error {
	if err := b.publish(qos, pid, dup, payload); err != nil {
		return err
	}
	if qos == 1 {
		if pk, err := b.read(packets.Puback); err != nil || pk.PacketID != pid {
			return fmt.Errorf("PUBACK of %d: got %d, %v", pid, pk.PacketID, err)
		}
		return nil
	}
	if pk, err := b.read(packets.Pubrec); err != nil || pk.PacketID != pid {
		return fmt.Errorf("PUBREC of %d: got %d, %v", pid, pk.PacketID, err)
	}
	rel := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, ProtocolVersion: 4, PacketID: pid}
	if err := b.write(rel, rel.PubrelEncode); err != nil {
		return err
	}
	if pk, err := b.read(packets.Pubcomp); err != nil || pk.PacketID != pid {
		return fmt.Errorf("PUBCOMP of %d: got %d, %v", pid, pk.PacketID, err)
	}
	return nil
}

func (b *fakeBroker) write(pk packets.Packet, enc func(*bytes.Buffer) error) error {
	var buf bytes.Buffer
	if err := enc(&buf); err != nil {
		return err
	}
	_, err := b.conn.Write(buf.Bytes())
	return err
}

// read reads the next packet, answering PINGREQs, and fails unless it is
// of type want.
func (b *fakeBroker) read(want byte) (packets.Packet, error) {
	if b.within > 0 {
		_ = b.conn.SetReadDeadline(time.Now().Add(b.within))
	}
	for {
		pk := packets.Packet{ProtocolVersion: 4}
		hb, err := b.r.ReadByte()
		if err != nil {
			return pk, err
		}
		if err := pk.FixedHeader.Decode(hb); err != nil {
			return pk, err
		}
		n, _, err := packets.DecodeLength(b.r)
		if err != nil {
			return pk, err
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(b.r, body); err != nil {
			return pk, err
		}
		switch pk.FixedHeader.Type {
		case packets.Pingreq:
			resp := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingresp}, ProtocolVersion: 4}
			if err := b.write(resp, resp.PingrespEncode); err != nil {
				return pk, err
			}
			continue
		case packets.Connect:
			err = pk.ConnectDecode(body)
		case packets.Subscribe:
			err = pk.SubscribeDecode(body)
		case packets.Puback:
			err = pk.PubackDecode(body)
		case packets.Pubrec:
			err = pk.PubrecDecode(body)
		case packets.Pubcomp:
			err = pk.PubcompDecode(body)
		}
		if err != nil {
			return pk, fmt.Errorf("decode %s: %w", packets.PacketNames[pk.FixedHeader.Type], err)
		}
		if pk.FixedHeader.Type != want {
			return pk, fmt.Errorf("got %s, want %s", packets.PacketNames[pk.FixedHeader.Type], packets.PacketNames[want])
		}
		return pk, nil
	}
}
