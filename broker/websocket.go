package broker

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// wsListener serves MQTT over WebSocket on a listener firehose bound itself
// (mochi's own WebSocket listener binds inside Serve, too late to report a
// port in use at start-up, and cannot report the port it got for ":0").
type wsListener struct {
	id        string
	ln        net.Listener
	srv       *http.Server
	up        websocket.Upgrader
	establish listeners.EstablishFn
	log       *slog.Logger
	closeOnce sync.Once
}

func newWSListener(id string, ln net.Listener) *wsListener {
	l := &wsListener{
		id: id,
		ln: ln,
		up: websocket.Upgrader{
			Subprotocols: []string{"mqtt"},
			// Browsers on any origin may connect: authentication is MQTT's.
			CheckOrigin: func(*http.Request) bool { return true },
		},
	}
	l.srv = &http.Server{Handler: l, ReadHeaderTimeout: 10 * time.Second}
	return l
}

func (l *wsListener) ID() string       { return l.id }
func (l *wsListener) Address() string  { return l.ln.Addr().String() }
func (l *wsListener) Protocol() string { return "ws" }

func (l *wsListener) Init(log *slog.Logger) error {
	l.log = log
	l.srv.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelDebug)
	return nil
}

// Serve accepts connections until Close; mochi runs it in a goroutine.
func (l *wsListener) Serve(establish listeners.EstablishFn) {
	l.establish = establish
	_ = l.srv.Serve(l.ln) // returns when closed
}

func (l *wsListener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := l.up.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade answered the client
	}
	defer c.Close()
	if err := l.establish(l.id, &wsConn{Conn: c.UnderlyingConn(), ws: c}); err != nil {
		l.log.Debug("websocket client", "err", err)
	}
}

// Close stops accepting and disconnects this listener's clients.
func (l *wsListener) Close(closeClients listeners.CloseFn) {
	l.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = l.srv.Shutdown(ctx)
	})
	closeClients(l.id)
}

// wsConn carries an MQTT byte stream in binary WebSocket messages; an MQTT
// packet may span messages and a message may hold several packets.
type wsConn struct {
	net.Conn // addresses and deadlines of the underlying connection
	ws       *websocket.Conn
	r        io.Reader // the message being read
	wmu      sync.Mutex
}

func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			typ, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				continue
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if err == io.EOF {
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
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsConn) Close() error { return c.ws.Close() }
