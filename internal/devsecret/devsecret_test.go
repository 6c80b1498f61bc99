package devsecret

import (
	"testing"

	"golang.org/x/crypto/bcrypt"
)

func TestNewHashCheck(t *testing.T) {
	secret, hash, err := New()
	if err != nil {
		t.Fatal(err)
	}
	if len(secret) != 32 {
		t.Errorf("secret %q: %d characters, want 32 (192 bits of base64url)", secret, len(secret))
	}
	if !IsHash([]byte(hash)) || !Valid([]byte(hash)) {
		t.Errorf("hash %q not taken for a device secret's", hash)
	}
	other, _, _ := New()
	again, err := Hash(secret)
	if err != nil || again == hash {
		t.Errorf("Hash of the same secret twice gave the same hash (no salt of its own): %q, %v", again, err)
	}
	bc, err := bcrypt.GenerateFromPassword([]byte(secret), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, hash, secret string
		want               bool
	}{
		{"right", hash, secret, true},
		{"right, another salt", again, secret, true},
		{"wrong", hash, other, false},
		{"one character off", hash, secret[:31] + "x", false},
		{"prefix", hash, secret[:16], false},
		{"empty", hash, "", false},
		{"truncated hash", hash[:len(hash)-2], secret, false},
		{"bcrypt hash", string(bc), secret, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Check([]byte(tc.hash), []byte(tc.secret)); got != tc.want {
				t.Errorf("Check = %v, want %v", got, tc.want)
			}
		})
	}
	if _, err := Hash("short"); err == nil {
		t.Error("Hash took a 5-character secret")
	}
	if Valid([]byte(Prefix + "x$y")) {
		t.Error("a malformed fh1$ hash is Valid")
	}
}

// BenchmarkCheck is the cost of one secret check, on every CONNECT and
// every HTTP request of a device (compare broker's BenchmarkCheckSecret
// against bcrypt).
func BenchmarkCheck(b *testing.B) {
	secret, hash, _ := New()
	h, s := []byte(hash), []byte(secret)
	b.ReportAllocs()
	for b.Loop() {
		if !Check(h, s) {
			b.Fatal("secret refused")
		}
	}
}
