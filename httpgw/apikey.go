package httpgw

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"firehose/ingest"
	"firehose/internal/reload"
)

// keyPrefix starts every key GenerateKey makes, so a leaked key is easy to
// recognise (secret scanners, logs).
const keyPrefix = "fh_"

// GenerateKey returns a new random API key: "fh_" and 32 random bytes (256
// bits) in unpadded base64url, 46 characters in all.
func GenerateKey() (key string, err error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("read random bytes: %w", err)
	}
	return keyPrefix + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// HashKey returns the hex SHA-256 of key, the form the API key file stores.
//
// A fast unsalted hash is right for API keys, unlike passwords: a key is 256
// random bits, so there is nothing to guess or look up in a precomputed
// table, and a deliberately slow hash (bcrypt, argon2) would only spend CPU on
// every request.
func HashKey(key string) string {
	d := sha256.Sum256([]byte(key))
	return hex.EncodeToString(d[:])
}

// apiKey is one line of the key file.
type apiKey struct {
	name    string
	digest  [sha256.Size]byte
	any     bool                // "*": any device
	devices map[string]struct{} // when !any
}

// allows reports whether the key may post readings for device.
func (k *apiKey) allows(device string) bool {
	if k.any {
		return true
	}
	_, ok := k.devices[device]
	return ok
}

// keySet is one loaded version of the key file, indexed by the SHA-256 of
// the key.
type keySet map[[sha256.Size]byte]*apiKey

// parseKeys parses the key file format:
//
//	# comment lines and blank lines are ignored
//	# name   sha256-hex-of-key   devices (comma-separated ids, or * for any)
//	gateway-a  9f86d08...  *
//	pump-7     2c26b46...  pump-7,pump-8
//
// Errors name file:line.
func parseKeys(file string, data []byte, maxDeviceID int) (keySet, error) {
	keys := keySet{}
	names := map[string]int{}
	digests := map[[sha256.Size]byte]int{} // line of each key's hash
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 {
			return nil, fmt.Errorf("%s:%d: want 3 fields (name, sha256-hex-of-key, devices) separated by spaces, found %d; a device list has no spaces", file, n, len(f))
		}
		name, sum, devs := f[0], f[1], f[2]
		if prev, ok := names[name]; ok {
			return nil, fmt.Errorf("%s:%d: key name %q is also on line %d", file, n, name, prev)
		}
		k := &apiKey{name: name}
		if !parseDigest(sum, &k.digest) {
			hint := ""
			if strings.HasPrefix(sum, keyPrefix) {
				hint = " (this looks like a key itself: the file holds only its hash; `firehose apikey` prints the line)"
			}
			return nil, fmt.Errorf("%s:%d: second field of key %q is not a SHA-256 in hex (64 hex digits)%s", file, n, name, hint)
		}
		if prev, ok := digests[k.digest]; ok {
			return nil, fmt.Errorf("%s:%d: key %q has the same hash as the key on line %d", file, n, name, prev)
		}
		if devs == "*" {
			k.any = true
		} else {
			k.devices = map[string]struct{}{}
			for d := range strings.SplitSeq(devs, ",") {
				if d == "*" {
					return nil, fmt.Errorf("%s:%d: key %q: '*' (any device) must stand alone, not in a list", file, n, name)
				}
				if err := ingest.ValidateDeviceID(d, maxDeviceID); err != nil {
					return nil, fmt.Errorf("%s:%d: key %q: device %q: %v", file, n, name, d, err)
				}
				k.devices[d] = struct{}{}
			}
		}
		names[name] = n
		digests[k.digest] = n
		keys[k.digest] = k
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	return keys, nil
}

// parseDigest decodes 64 hex digits into d.
func parseDigest(s string, d *[sha256.Size]byte) bool {
	if len(s) != hex.EncodedLen(sha256.Size) {
		return false
	}
	_, err := hex.Decode(d[:], []byte(s))
	return err == nil
}

// authenticate finds the key of a request, sent as "Authorization: Bearer
// <key>" or "X-API-Key: <key>"; errors are 401 answers.
func (s *Server) authenticate(r *http.Request) (*apiKey, error) {
	key := ""
	if a := r.Header.Get("Authorization"); a != "" {
		if scheme, cred, ok := strings.Cut(a, " "); ok && strings.EqualFold(scheme, "Bearer") {
			key = strings.TrimSpace(cred)
		}
	}
	if key == "" {
		key = strings.TrimSpace(r.Header.Get("X-Api-Key"))
	}
	if key == "" {
		return nil, errMissingKey
	}
	if k := s.keys.lookup(key); k != nil {
		return k, nil
	}
	return nil, errUnknownKey
}

// forbidden is the 403 answer to a key posting for a device it is not bound
// to.
func forbidden(k *apiKey, device string) *apiError {
	return refusal(http.StatusForbidden, reasonForbidden, fmt.Sprintf("API key %q may not post for device %q", k.name, device))
}

// keyStore holds the current keys; Run's watcher re-reads the file when it
// changes, so removing a line revokes a key without a restart.
type keyStore struct {
	file *reload.File[keySet]
	log  *slog.Logger
}

// newKeyStore loads path; an unreadable or invalid file is an error.
func newKeyStore(path string, maxDeviceID int, log *slog.Logger) (*keyStore, error) {
	f, err := reload.Load(path, "API key file", func(path string, data []byte) (keySet, error) {
		return parseKeys(path, data, maxDeviceID)
	}, log)
	if err != nil {
		return nil, err
	}
	ks := &keyStore{file: f, log: log}
	ks.loaded(f.Get())
	return ks, nil
}

func (ks *keyStore) loaded(keys keySet) {
	ks.log.Info("API keys loaded", "file", ks.file.Path(), "keys", len(keys))
	if len(keys) == 0 {
		ks.log.Warn("API key file holds no keys: every request to the readings endpoints is refused", "file", ks.file.Path())
	}
}

// lookup returns the key whose hash is the hash of key, or nil.
func (ks *keyStore) lookup(key string) *apiKey { return ks.file.Get().lookup(key) }

// watch re-reads the key file every interval until ctx ends.
func (ks *keyStore) watch(ctx context.Context, every time.Duration) {
	ks.file.Watch(ctx, every, ks.loaded)
}

// lookup returns the key whose hash is the hash of key, or nil.
//
// The map lookup's timing depends only on the SHA-256 of what the client
// sent, which tells an attacker nothing about any stored key (finding a key
// from its hash is a preimage attack); the final comparison is constant-time
// all the same.
func (keys keySet) lookup(key string) *apiKey {
	d := sha256.Sum256([]byte(key))
	k := keys[d]
	if k == nil || subtle.ConstantTimeCompare(k.digest[:], d[:]) != 1 {
		return nil
	}
	return k
}
