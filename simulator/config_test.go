package simulator

import (
	"crypto/tls"
	"slices"
	"strings"
	"testing"
)

// TestKeyExchange: classic devices offer X25519 and P-256 only; hybrid
// (the default) leaves Go's preferences, the post-quantum hybrid first.
func TestKeyExchange(t *testing.T) {
	tc, err := tlsConfig(&Config{KeyExchange: KeyExchangeClassic})
	if err != nil || tc == nil || !slices.Equal(tc.CurvePreferences, []tls.CurveID{tls.X25519, tls.CurveP256}) {
		t.Errorf("classic: %+v, %v; want X25519 and P-256 only", tc, err)
	}
	tc, err = tlsConfig(&Config{KeyExchange: KeyExchangeHybrid, InsecureSkipVerify: true})
	if err != nil || tc == nil || tc.CurvePreferences != nil {
		t.Errorf("hybrid: %+v, %v; want Go's default preferences", tc, err)
	}
	c := DefaultConfig()
	c.KeyExchange = "quantum"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--tls-key-exchange") {
		t.Errorf("--tls-key-exchange quantum: %v, want refused", err)
	}
}
