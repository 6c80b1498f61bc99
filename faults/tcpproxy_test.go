package faults

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// tcpProxy forwards TCP connections on a loopback port to one upstream
// address. Freeze stops forwarding in both directions while every socket
// stays open (a stalled network path: what was sent sits in buffers, nothing
// arrives); Cut closes every connection. A scenario puts one between a Redis
// replica and its primary to make the replica lag behind. DropReplies makes
// lost acknowledgements: while it is on, every request still reaches the
// server, and the first reply on a connection closes it instead of arriving.
type tcpProxy struct {
	ln       net.Listener
	upstream string

	dropReplies atomic.Bool
	dropped     atomic.Int64 // replies dropped

	mu     sync.Mutex
	thawed chan struct{} // closed while forwarding
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

func startTCPProxy(t *testing.T, upstream string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, upstream: upstream, conns: map[net.Conn]struct{}{}, thawed: make(chan struct{})}
	close(p.thawed)
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

// Port is the proxy's loopback port.
func (p *tcpProxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// Freeze stops all forwarding; sockets stay open.
func (p *tcpProxy) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.thawed:
		p.thawed = make(chan struct{})
	default:
	}
}

// Cut closes every connection through the proxy (what was held is dropped);
// new ones are still taken, and forwarded once thawed.
func (p *tcpProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

func (p *tcpProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.upstream)
		if err != nil {
			c.Close()
			continue
		}
		if !p.track(c, up) {
			return
		}
		p.wg.Go(func() { p.pipe(up, c, false) })
		p.wg.Go(func() { p.pipe(c, up, true) })
	}
}

// track registers a connection pair, or closes it when the proxy is closed.
func (p *tcpProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

// DropReplies turns the dropping of replies on or off.
func (p *tcpProxy) DropReplies(on bool) { p.dropReplies.Store(on) }

// Dropped is how many replies were dropped, each with its connection.
func (p *tcpProxy) Dropped() int64 { return p.dropped.Load() }

// pipe copies src to dst while thawed; when either side ends, both close.
// reply says src is the upstream server.
func (p *tcpProxy) pipe(dst, src net.Conn, reply bool) {
	defer func() {
		dst.Close()
		src.Close()
		p.mu.Lock()
		delete(p.conns, dst)
		delete(p.conns, src)
		p.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && reply && p.dropReplies.Load() {
			p.dropped.Add(1)
			return // the deferred closes end both sides: the request ran, its answer is lost
		}
		if n > 0 {
			p.mu.Lock()
			thawed := p.thawed
			p.mu.Unlock()
			<-thawed // frozen: hold this chunk, read nothing more (a Cut or close ends the wait below)
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				return
			}
			return
		}
	}
}

// close stops the proxy and ends every connection.
func (p *tcpProxy) close() {
	p.mu.Lock()
	p.closed = true
	select {
	case <-p.thawed:
	default:
		close(p.thawed) // release writers held by a freeze; their conns are closed below
	}
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}
