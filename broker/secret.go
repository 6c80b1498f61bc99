package broker

import "firehose/internal/devsecret"

// Device secrets (fh1$ hashes) are made and checked by package devsecret,
// which the HTTP gateway shares: see there why they are not bcrypt.
const (
	secretPrefix = devsecret.Prefix
	// SecretBytes is the randomness of a secret NewSecret makes: 192 bits,
	// 32 characters of base64url.
	SecretBytes = devsecret.SecretBytes
)

// NewSecret makes a random device secret and its hash for the credentials
// file or the device registry. The secret is given to the device once; only
// the hash is kept.
func NewSecret() (secret, hash string, err error) { return devsecret.New() }

// HashSecret returns the stored form of a device secret (fh1$SALT$MAC) with
// a new random salt. A secret must be machine-made (NewSecret): a password
// a person chose belongs in a bcrypt hash (HashPassword).
func HashSecret(secret string) (string, error) { return devsecret.Hash(secret) }

// isSecretHash reports whether a stored hash is a device secret's.
func isSecretHash(hash []byte) bool { return devsecret.IsHash(hash) }

// checkSecret reports whether secret matches its stored hash, in constant
// time in the secret.
func checkSecret(hash, secret []byte) bool { return devsecret.Check(hash, secret) }
