package broker

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
)

// Device secrets are machine credentials: random, at least 128 bits, so
// that guessing one is hopeless however fast a guess can be checked, and the
// slowness bcrypt adds to protect passwords people choose buys nothing. A
// secret is stored as HMAC-SHA256(salt, secret) with a random salt of its
// own, checked in under 2 µs (BenchmarkCheckSecret: 1.6 µs), against about
// 60 ms for bcrypt at cost 10 on one core: one core admits about 17 bcrypt
// devices a second, and about 600,000 secret checks.
const (
	// secretPrefix opens a device secret's stored hash:
	// fh1$<salt>$<HMAC-SHA256(salt, secret)>, both unpadded base64url.
	secretPrefix = "fh1$"
	// SecretBytes is the randomness of a secret NewSecret makes: 192 bits,
	// 32 characters of base64url.
	SecretBytes = 24
	saltBytes   = 16
)

var b64 = base64.RawURLEncoding

// NewSecret makes a random device secret and its hash for the credentials
// file or the device registry. The secret is given to the device once; only
// the hash is kept.
func NewSecret() (secret, hash string, err error) {
	b := make([]byte, SecretBytes)
	if _, err := rand.Read(b); err != nil {
		return "", "", fmt.Errorf("make a device secret: %w", err)
	}
	secret = b64.EncodeToString(b)
	hash, err = HashSecret(secret)
	return secret, hash, err
}

// HashSecret returns the stored form of a device secret (fh1$SALT$MAC) with
// a new random salt. A secret must be machine-made (NewSecret): a password
// a person chose belongs in a bcrypt hash (HashPassword).
func HashSecret(secret string) (string, error) {
	if len(secret) < 22 { // 128 bits of base64
		return "", fmt.Errorf("a device secret has at least 22 characters (128 bits), got %d", len(secret))
	}
	salt := make([]byte, saltBytes)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("make a salt: %w", err)
	}
	return secretPrefix + b64.EncodeToString(salt) + "$" + b64.EncodeToString(secretMAC(salt, []byte(secret))), nil
}

func secretMAC(salt, secret []byte) []byte {
	m := hmac.New(sha256.New, salt)
	m.Write(secret)
	return m.Sum(nil)
}

// isSecretHash reports whether a stored hash is a device secret's.
func isSecretHash(hash []byte) bool { return bytes.HasPrefix(hash, []byte(secretPrefix)) }

// parseSecretHash splits fh1$SALT$MAC into the salt and the MAC.
func parseSecretHash(hash []byte) (salt, mac []byte, ok bool) {
	rest, found := bytes.CutPrefix(hash, []byte(secretPrefix))
	if !found {
		return nil, nil, false
	}
	s, m, found := bytes.Cut(rest, []byte("$"))
	if !found {
		return nil, nil, false
	}
	salt, err := b64.AppendDecode(nil, s)
	if err != nil || len(salt) != saltBytes {
		return nil, nil, false
	}
	mac, err = b64.AppendDecode(nil, m)
	if err != nil || len(mac) != sha256.Size {
		return nil, nil, false
	}
	return salt, mac, true
}

// checkSecret reports whether secret matches its stored hash, in constant
// time in the secret.
func checkSecret(hash, secret []byte) bool {
	salt, mac, ok := parseSecretHash(hash)
	if !ok || len(secret) == 0 {
		return false
	}
	return hmac.Equal(secretMAC(salt, secret), mac)
}
