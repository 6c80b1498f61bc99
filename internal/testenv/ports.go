package testenv

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Ports a test hands to a server it starts (redis-server, firehose) are
// chosen below the kernel's ephemeral range (net.ipv4.ip_local_port_range,
// 32768-60999 by default). A port the kernel picked for a listen on port 0
// is an ephemeral one: once the probe closes it, the kernel may give it to
// any outgoing connection on the machine as its source port (under load,
// tests make thousands), and the server started a moment later then fails
// with "address already in use". Below the range only another test choosing
// explicitly can collide, and this process never hands out a port twice.
const portLow = 10000

var (
	portsMu     sync.Mutex
	portsGiven  = map[int]bool{}
	portsHigh   int // exclusive; the start of the ephemeral range
	portsHighOK bool
)

// ephemeralLow is the first port of the kernel's ephemeral range (32768
// when it cannot be read).
func ephemeralLow() int {
	if portsHighOK {
		return portsHigh
	}
	portsHigh, portsHighOK = 32768, true
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if lo, err := strconv.Atoi(f[0]); err == nil && lo > portLow+1000 {
				portsHigh = lo
			}
		}
	}
	return portsHigh
}

// FreePort is a loopback TCP port that is free now, outside the kernel's
// ephemeral range, and not handed out before by this process (see portLow).
func FreePort(t testing.TB) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	hi := ephemeralLow()
	for range 1000 {
		p := portLow + rand.IntN(hi-portLow)
		if portsGiven[p] || !portFree(p) {
			continue
		}
		portsGiven[p] = true
		return p
	}
	t.Fatalf("no free loopback port in %d-%d after 1000 tries", portLow, hi-1)
	return 0
}

// FreeAddr is "127.0.0.1:port" of a FreePort.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
}

// portFree reports whether port can be listened on at 127.0.0.1 now.
func portFree(port int) bool {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	ln.Close()
	return true
}
