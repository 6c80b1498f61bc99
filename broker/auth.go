package broker

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"golang.org/x/crypto/bcrypt"

	"firehose/ingest"
	"firehose/internal/reload"
)

// Credentials maps a device id to the bcrypt hash of its password.
type Credentials map[string][]byte

// ParseCredentials parses the device credentials file:
//
//	# comment lines and blank lines are ignored
//	# device-id  bcrypt hash of its password
//	pump-7       $2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy
//
// A device connects with its id as the MQTT username and its password, and
// may publish readings only under its own id. Passwords are stored only as
// bcrypt hashes (make a line with firehose mqttpasswd). Errors name file:line.
func ParseCredentials(file string, data []byte) (Credentials, error) {
	creds := Credentials{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			return nil, fmt.Errorf("%s:%d: want \"device-id bcrypt-hash\", got %d fields", file, n, len(f))
		}
		if err := ingest.ValidateDeviceID(f[0], 0); err != nil {
			return nil, fmt.Errorf("%s:%d: device id %q: %v", file, n, f[0], err)
		}
		if _, err := bcrypt.Cost([]byte(f[1])); err != nil {
			return nil, fmt.Errorf("%s:%d: the password of %q is not a bcrypt hash (make one with firehose mqttpasswd): %v", file, n, f[0], err)
		}
		if _, dup := creds[f[0]]; dup {
			return nil, fmt.Errorf("%s:%d: device %q appears twice", file, n, f[0])
		}
		creds[f[0]] = []byte(f[1])
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return creds, nil
}

// HashPassword returns the bcrypt hash of password for the credentials file.
func HashPassword(password string) (string, error) {
	if password == "" {
		return "", fmt.Errorf("empty password")
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return string(h), nil
}

// authenticator checks device credentials against the file, kept current.
//
// bcrypt is slow on purpose (tens of milliseconds); a fleet reconnecting at
// once would spend minutes of CPU on it. So a password that passed once is
// remembered as its SHA-256 next to the hash it passed against: a later
// connect with the same password is checked in microseconds, and a changed
// or removed line in the file makes the remembered check void.
type authenticator struct {
	file   *reload.File[Credentials]
	mu     sync.Mutex
	passed map[string]passedCheck
}

type passedCheck struct {
	hash   string // the bcrypt hash it passed against
	digest [sha256.Size]byte
}

func newAuthenticator(path string, log *slog.Logger) (*authenticator, error) {
	f, err := reload.Load(path, "MQTT credentials file", ParseCredentials, log)
	if err != nil {
		return nil, err
	}
	log.Info("MQTT device credentials loaded", "file", path, "devices", len(f.Get()))
	return &authenticator{file: f, passed: map[string]passedCheck{}}, nil
}

// check reports whether password is device's password.
func (a *authenticator) check(device string, password []byte) bool {
	hash, ok := a.file.Get()[device]
	if !ok || len(password) == 0 {
		return false
	}
	digest := sha256.Sum256(password)
	a.mu.Lock()
	p, seen := a.passed[device]
	a.mu.Unlock()
	if seen && p.hash == string(hash) && subtle.ConstantTimeCompare(p.digest[:], digest[:]) == 1 {
		return true
	}
	if bcrypt.CompareHashAndPassword(hash, password) != nil {
		return false
	}
	a.mu.Lock()
	a.passed[device] = passedCheck{hash: string(hash), digest: digest}
	a.mu.Unlock()
	return true
}
