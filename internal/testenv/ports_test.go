package testenv

import "testing"

// TestFreePortOutsideEphemeralRange: the ports handed out are below the
// kernel's ephemeral range (an outgoing connection cannot take them) and
// never handed out twice.
func TestFreePortOutsideEphemeralRange(t *testing.T) {
	seen := map[int]bool{}
	for range 200 {
		p := FreePort(t)
		if p < portLow || p >= ephemeralLow() {
			t.Fatalf("port %d outside %d-%d", p, portLow, ephemeralLow()-1)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
	}
}
