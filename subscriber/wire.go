package subscriber

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/packets"
)

// schemes are the broker URL schemes, and whether each is over TLS and
// over WebSocket.
var schemes = map[string]struct{ tls, ws bool }{
	"tcp": {}, "mqtt": {},
	"ssl": {tls: true}, "tls": {tls: true}, "mqtts": {tls: true},
	"ws": {ws: true}, "wss": {tls: true, ws: true},
}

// tlsConfig is the TLS client configuration of c: its CA and client
// certificate.
func (c Config) tlsConfig(host string) (*tls.Config, error) {
	tc := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("--subscribe-ca: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--subscribe-ca %s: no PEM certificate in it", c.CAFile)
		}
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("--subscribe-cert, --subscribe-key: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// dial opens a network connection to the broker at rawURL.
func (c Config) dial(ctx context.Context, rawURL string) (net.Conn, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("broker URL %q: %w", rawURL, err)
	}
	sch := schemes[u.Scheme]
	var tc *tls.Config
	if sch.tls {
		if tc, err = c.tlsConfig(u.Hostname()); err != nil {
			return nil, err
		}
	}
	if sch.ws {
		d := websocket.Dialer{TLSClientConfig: tc, Subprotocols: []string{"mqtt"}, HandshakeTimeout: c.ConnectTimeout, Proxy: http.ProxyFromEnvironment}
		ws, _, err := d.DialContext(ctx, rawURL, nil)
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", rawURL, err)
		}
		return &wsConn{Conn: ws}, nil
	}
	d := net.Dialer{Timeout: c.ConnectTimeout, KeepAlive: 30 * time.Second}
	var conn net.Conn
	if tc != nil {
		conn, err = (&tls.Dialer{NetDialer: &d, Config: tc}).DialContext(ctx, "tcp", u.Host)
	} else {
		conn, err = d.DialContext(ctx, "tcp", u.Host)
	}
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", rawURL, err)
	}
	return conn, nil
}

// wsConn is a WebSocket connection as a byte stream: MQTT packets travel in
// binary messages, and a packet may span messages.
type wsConn struct {
	*websocket.Conn
	r  io.Reader // the message being read
	mu sync.Mutex
}

func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			_, r, err := c.NextReader()
			if err != nil {
				return 0, err
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// maxPacket bounds a packet read from the broker: MQTT's own limit is
// 256 MiB; a reading's message is far smaller.
const maxPacket = 16 << 20

// readPacket reads one packet of protocol version v from r.
func readPacket(r *bufio.Reader, v byte) (packets.Packet, error) {
	pk := packets.Packet{ProtocolVersion: v}
	hb, err := r.ReadByte()
	if err != nil {
		return pk, err
	}
	if err := pk.FixedHeader.Decode(hb); err != nil {
		return pk, fmt.Errorf("fixed header: %w", err)
	}
	n, _, err := packets.DecodeLength(r)
	if err != nil {
		return pk, fmt.Errorf("remaining length: %w", err)
	}
	if n > maxPacket {
		return pk, fmt.Errorf("packet of %d bytes: over the %d this subscriber takes", n, maxPacket)
	}
	pk.FixedHeader.Remaining = n
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return pk, err
	}
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(buf)
	case packets.Publish:
		err = pk.PublishDecode(buf)
	case packets.Puback, packets.Pubrec, packets.Pubcomp:
		err = nil // this subscriber publishes nothing: ignored
	case packets.Pubrel:
		err = pk.PubrelDecode(buf)
	case packets.Suback:
		err = pk.SubackDecode(buf)
	case packets.Pingresp:
	case packets.Disconnect:
		err = pk.DisconnectDecode(buf)
	case packets.Auth:
		err = errors.New("the broker asks for enhanced authentication (AUTH), which this subscriber does not speak")
	default:
		err = fmt.Errorf("unexpected packet type %d from the broker", pk.FixedHeader.Type)
	}
	if err != nil {
		return pk, fmt.Errorf("decode %s: %w", packets.PacketNames[pk.FixedHeader.Type], err)
	}
	return pk, nil
}

// encode appends pk's encoding to buf.
func encode(buf *bytes.Buffer, pk packets.Packet) error {
	switch pk.FixedHeader.Type {
	case packets.Connect:
		return pk.ConnectEncode(buf)
	case packets.Subscribe:
		return pk.SubscribeEncode(buf)
	case packets.Publish:
		return pk.PublishEncode(buf)
	case packets.Puback:
		return pk.PubackEncode(buf)
	case packets.Pubrec:
		return pk.PubrecEncode(buf)
	case packets.Pubcomp:
		return pk.PubcompEncode(buf)
	case packets.Pingreq:
		return pk.PingreqEncode(buf)
	case packets.Disconnect:
		return pk.DisconnectEncode(buf)
	}
	return fmt.Errorf("encode packet type %d: not one this subscriber sends", pk.FixedHeader.Type)
}
