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
	"os"
	"strings"
	"sync/atomic"
	"time"

	"firehose/ingest"
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

// fileStamp identifies a version of a file well enough to notice a change.
type fileStamp struct {
	mod  time.Time
	size int64
}

// racyWindow: a file modified this shortly before it was read may be
// modified again with the same timestamp (file systems keep time in coarse
// ticks), so its content is compared on the next check too, as git does
// with its index.
const racyWindow = time.Second

// keyStore holds the current keys and re-reads the file when it changes.
type keyStore struct {
	path        string
	maxDeviceID int
	log         *slog.Logger
	cur         atomic.Pointer[keySet]

	// Only the loader (New, then the watch goroutine) touches these.
	stamp   fileStamp
	sum     [sha256.Size]byte // of the content in use
	racy    bool              // stamp too recent to trust alone
	lastErr string
}

// newKeyStore loads path; an unreadable or invalid file is an error.
func newKeyStore(path string, maxDeviceID int, log *slog.Logger) (*keyStore, error) {
	ks := &keyStore{path: path, maxDeviceID: maxDeviceID, log: log}
	if _, err := ks.reload(); err != nil {
		return nil, err
	}
	log.Info("API keys loaded", "file", path, "keys", len(*ks.cur.Load()))
	return ks, nil
}

// lookup returns the key whose hash is the hash of key, or nil.
//
// The map lookup's timing depends only on the SHA-256 of what the client
// sent, which tells an attacker nothing about any stored key (finding a key
// from its hash is a preimage attack); the final comparison is constant-time
// all the same.
func (ks *keyStore) lookup(key string) *apiKey {
	d := sha256.Sum256([]byte(key))
	k := (*ks.cur.Load())[d]
	if k == nil || subtle.ConstantTimeCompare(k.digest[:], d[:]) != 1 {
		return nil
	}
	return k
}

// reload reads the file if its modification time or size changed since the
// last load (or the last load was racy). It returns whether new keys are in
// use. On error the previous keys stay in use.
func (ks *keyStore) reload() (bool, error) {
	fi, err := os.Stat(ks.path)
	if err != nil {
		return false, fmt.Errorf("read API key file: %w", err)
	}
	st := fileStamp{mod: fi.ModTime(), size: fi.Size()}
	loaded := ks.cur.Load() != nil
	if loaded && st == ks.stamp && !ks.racy {
		return false, nil
	}
	readAt := time.Now()
	data, err := os.ReadFile(ks.path)
	if err != nil {
		return false, fmt.Errorf("read API key file: %w", err)
	}
	sum := sha256.Sum256(data)
	racy := readAt.Sub(st.mod) < racyWindow
	if loaded && sum == ks.sum {
		ks.stamp, ks.racy = st, racy
		return false, nil
	}
	keys, err := parseKeys(ks.path, data, ks.maxDeviceID)
	if err != nil {
		return false, err
	}
	ks.stamp, ks.sum, ks.racy = st, sum, racy
	ks.cur.Store(&keys)
	if len(keys) == 0 {
		ks.log.Warn("API key file holds no keys: every request to the readings endpoints is refused", "file", ks.path)
	}
	return true, nil
}

// watch checks the file every interval until ctx ends. A file that became
// unreadable or invalid keeps the previous keys; the error is logged once.
func (ks *keyStore) watch(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changed, err := ks.reload()
		switch {
		case err != nil:
			if msg := err.Error(); msg != ks.lastErr {
				ks.lastErr = msg
				ks.log.Error("API key file not reloaded: keeping the previous keys", "file", ks.path, "err", err)
			}
		case changed:
			ks.lastErr = ""
			ks.log.Info("API keys reloaded", "file", ks.path, "keys", len(*ks.cur.Load()))
		}
	}
}
