package broker

import (
	"context"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// TestNewSecret: the broker's secrets are devsecret's (tested there): a
// new one's hash is a valid credentials-file hash, and checks its secret
// only.
func TestNewSecret(t *testing.T) {
	secret, hash, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	if err := ValidateHash(hash); err != nil {
		t.Errorf("ValidateHash(%q): %v", hash, err)
	}
	other, _, _ := NewSecret()
	if !checkSecret([]byte(hash), []byte(secret)) || checkSecret([]byte(hash), []byte(other)) {
		t.Error("a secret's hash does not check it, or checks another")
	}
	if _, err := HashSecret("short"); err == nil {
		t.Error("HashSecret took a 5-character secret")
	}
}

func TestValidateHash(t *testing.T) {
	_, good, _ := NewSecret()
	for _, tc := range []struct {
		name, hash, wantErr string
	}{
		{"secret", good, ""},
		{"bcrypt", cheapHash(t, "pw"), ""},
		{"plain text", "secret", "is not a bcrypt hash"},
		{"secret without MAC", "fh1$AAAAAAAAAAAAAAAAAAAAAA", "is not a device secret's hash"},
		{"secret with short salt", "fh1$AAAA$" + strings.Repeat("A", 43), "is not a device secret's hash"},
		{"secret with bad base64", good[:len(good)-1] + "!", "is not a device secret's hash"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateHash(tc.hash)
			if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("ValidateHash(%q) = %v, want %q", tc.hash, err, tc.wantErr)
			}
		})
	}
	c, err := ParseCredentials("creds", []byte("pump-7 "+good+" read=devices/+/readings\n"))
	if err != nil || string(c["pump-7"].Hash) != good {
		t.Errorf("a line with a device secret's hash does not parse: %v, %v", c, err)
	}
}

// TestAuthenticatorSecretNoBcrypt: a device secret is decided by the quick
// check, right or wrong, and never runs bcrypt.
func TestAuthenticatorSecretNoBcrypt(t *testing.T) {
	secret, hash, _ := NewSecret()
	src := &staticSource{creds: Credentials{"pump-7": {Hash: []byte(hash)}}}
	a := newAuthenticatorFrom(src)
	if ok, decided := a.quick("pump-7", []byte(secret)); !ok || !decided {
		t.Errorf("quick(right secret) = %v, %v; want true, true", ok, decided)
	}
	if ok, decided := a.quick("pump-7", []byte("wrong-wrong-wrong-wrong-wrong")); ok || !decided {
		t.Errorf("quick(wrong secret) = %v, %v; want false, true", ok, decided)
	}
	if !a.check("pump-7", []byte(secret)) || a.check("pump-7", []byte("nope")) {
		t.Error("check disagrees with the secret")
	}
	if n := a.bcrypts.Load(); n != 0 {
		t.Errorf("%d bcrypt comparisons for device secrets, want 0", n)
	}
	_, rotated, _ := NewSecret()
	src.creds = Credentials{"pump-7": {Hash: []byte(rotated)}}
	if a.stillValid("pump-7", []byte(secret)) {
		t.Error("the old secret still valid after a rotation")
	}
}

func TestRevoked(t *testing.T) {
	h1, h2 := []byte("fh1$a"), []byte("fh1$b")
	old := Credentials{
		"same":      {Hash: h1, Read: []string{"a/#"}},
		"removed":   {Hash: h1},
		"rotated":   {Hash: h1},
		"narrowed":  {Hash: h1, Read: []string{"a/#", "b/#"}},
		"unwritten": {Hash: h1, Write: []string{"c/#"}},
		"ungrouped": {Hash: h1, Sparkplug: []string{"p1"}},
		"widened":   {Hash: h1, Read: []string{"a/#"}},
	}
	cur := Credentials{
		"same":      {Hash: h1, Read: []string{"a/#"}},
		"rotated":   {Hash: h2},
		"narrowed":  {Hash: h1, Read: []string{"b/#"}},
		"unwritten": {Hash: h1},
		"ungrouped": {Hash: h1},
		"widened":   {Hash: h1, Read: []string{"a/#", "z/#"}, Write: []string{"q"}},
		"added":     {Hash: h2},
	}
	got := revoked(old, cur)
	want := map[string]bool{"removed": true, "rotated": true, "narrowed": true, "unwritten": true, "ungrouped": true}
	if len(got) != len(want) {
		t.Errorf("revoked = %v, want %v", got, want)
	}
	for d := range want {
		if !got[d] {
			t.Errorf("%s not revoked", d)
		}
	}
	if len(revoked(nil, cur)) != 0 {
		t.Error("the first load revokes something")
	}
}

// BenchmarkCheckSecret compares the check of a device secret with bcrypt's
// at the cost firehose mqttpasswd uses (bcrypt.DefaultCost, 10).
func BenchmarkCheckSecret(b *testing.B) {
	secret, hash, _ := NewSecret()
	b.Run("hmac-sha256", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !checkSecret([]byte(hash), []byte(secret)) {
				b.Fatal("secret refused")
			}
		}
	})
	b.Run("bcrypt-cost10", func(b *testing.B) {
		h, _ := bcrypt.GenerateFromPassword([]byte(secret), bcrypt.DefaultCost)
		b.ReportAllocs()
		for b.Loop() {
			if bcrypt.CompareHashAndPassword(h, []byte(secret)) != nil {
				b.Fatal("password refused")
			}
		}
	})
}

// staticSource is a CredentialSource whose credentials the test sets.
type staticSource struct{ creds Credentials }

func (s *staticSource) Credentials() Credentials                          { return s.creds }
func (s *staticSource) Watch(context.Context, func(old, cur Credentials)) {}
func (s *staticSource) Connected(string)                                  {}
