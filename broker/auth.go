package broker

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	mqtt "github.com/mochi-mqtt/server/v2"
	"golang.org/x/crypto/bcrypt"

	"firehose/ingest"
	"firehose/internal/reload"
)

// Credentials maps a device id (the MQTT username) to its line of the
// credentials file.
type Credentials map[string]Credential

// Credential is one line of the credentials file.
type Credential struct {
	// Hash is the bcrypt hash of the password.
	Hash []byte
	// Read are the topic filters the user may subscribe to beyond its own
	// topics (read=FILTER fields), e.g. devices/+/readings for a dashboard.
	// They grant reading only: readings are still published only under the
	// user's own id.
	Read []string
	// Write are the topic filters the user may publish on beyond its own
	// topics (write=FILTER fields), retained messages and wills included:
	// e.g. spBv1.0/+/NCMD/# for a Sparkplug host application's commands,
	// spBv1.0/STATE/scada for its STATE, devices/+/commands for an
	// application commanding devices. Without one a client publishes only
	// its own topics (see acl.mayWrite). A grant never makes readings of
	// another device: rows of the readings topic and of mapping rules are
	// still the user's own.
	Write []string
	// Sparkplug are the Sparkplug B groups (sparkplug=GROUP fields) in which
	// the user is an edge node, its edge node id being its username: it
	// publishes its births, data and deaths there (spBv1.0/GROUP/N*|D*/ID),
	// and reads its commands. Without one a user is no edge node.
	Sparkplug []string
}

// readField, writeField and sparkplugField open a field granting a topic
// filter to read, one to publish on, and a Sparkplug B group to be an edge
// node in.
const (
	readField      = "read="
	writeField     = "write="
	sparkplugField = "sparkplug="
)

// ParseCredentials parses the device credentials file:
//
//	# comment lines and blank lines are ignored
//	# device-id  bcrypt hash of its password  [read=FILTER ...] [write=FILTER ...] [sparkplug=GROUP ...]
//	pump-7       $2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy
//	dashboard    $2a$10$...  read=devices/+/readings read=devices/+/status
//	edge1        $2a$10$...  sparkplug=plant1 sparkplug=plant2
//	scada        $2a$10$...  read=spBv1.0/# write=spBv1.0/+/NCMD/# write=spBv1.0/+/DCMD/# write=spBv1.0/STATE/scada
//	ops          $2a$10$...  write=devices/+/commands
//
// A device connects with its id as the MQTT username and as the client id,
// and its password. Everything is denied that a line does not allow. A
// device publishes (retained messages and wills too) only on its own
// topics: under its own id (devices/pump-7/# for the default topic
// template), a topic a mapping rule maps when every row it makes is its own,
// and, for each sparkplug=GROUP field, its own Sparkplug B edge node's
// messages in that group (the edge node id is the username). It subscribes
// only to topics under its own id, and an edge node to its commands in its
// groups and to the hosts' STATE. Each read=FILTER field grants subscribing
// to an MQTT topic filter too (+ and # wildcards; no $share/ prefix: a
// grant covers shared subscriptions to its filter; # does not cover
// $SYS/#). Each write=FILTER field grants publishing on the topics the filter
// matches: the only way to send a Sparkplug B command (NCMD, DCMD) or STATE
// (a host's spBv1.0/STATE/ID, as a publish or as its will), or to publish
// on another device's topics. A user with a read grant may also connect
// with client ids username/anything, one per dashboard tab. Passwords are
// stored only as bcrypt hashes (make a line with firehose mqttpasswd).
// Errors name file:line.
func ParseCredentials(file string, data []byte) (Credentials, error) {
	creds := Credentials{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			return nil, fmt.Errorf("%s:%d: want \"device-id bcrypt-hash [read=FILTER ...] [write=FILTER ...] [sparkplug=GROUP ...]\", got %d fields", file, n, len(f))
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
		c := Credential{Hash: []byte(f[1])}
		for _, field := range f[2:] {
			if group, ok := strings.CutPrefix(field, sparkplugField); ok {
				if err := validateGroup(group); err != nil {
					return nil, fmt.Errorf("%s:%d: %s of %q: %v", file, n, field, f[0], err)
				}
				c.Sparkplug = append(c.Sparkplug, group)
				continue
			}
			grants := &c.Read
			filter, ok := strings.CutPrefix(field, readField)
			if !ok {
				filter, ok = strings.CutPrefix(field, writeField)
				grants = &c.Write
			}
			if !ok {
				return nil, fmt.Errorf("%s:%d: field %q of %q: want read=FILTER, write=FILTER or sparkplug=GROUP", file, n, field, f[0])
			}
			if err := validateGrant(filter); err != nil {
				return nil, fmt.Errorf("%s:%d: %s of %q: %v", file, n, field, f[0], err)
			}
			*grants = append(*grants, filter)
		}
		creds[f[0]] = c
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return creds, nil
}

// validateGrant checks a read=FILTER or write=FILTER grant.
func validateGrant(filter string) error {
	switch {
	case filter == "":
		return errors.New("empty topic filter")
	case !mqtt.IsValidFilter(filter, false):
		return errors.New("not a valid MQTT topic filter (# only as the last level, + and # as whole levels)")
	case mqtt.IsSharedFilter(filter):
		return errors.New("grant the filter itself: it covers shared subscriptions ($share/group/FILTER) to it")
	}
	for _, level := range strings.Split(filter, "/") {
		if len(level) > 1 && strings.ContainsAny(level, "+#") {
			return errors.New("not a valid MQTT topic filter (+ and # must be whole levels)")
		}
	}
	return nil
}

// validateGroup checks the group of a sparkplug=GROUP field: one topic
// level as Sparkplug B allows a group_id, and not STATE, which names the
// host applications' STATE topics.
func validateGroup(group string) error {
	switch {
	case group == "":
		return errors.New("empty Sparkplug B group")
	case strings.ContainsAny(group, "/+#\x00"):
		return errors.New("a Sparkplug B group holds no /, +, # or NUL")
	case group == "STATE":
		return errors.New("STATE is the host applications' topic, not a group")
	case !utf8.ValidString(group):
		return errors.New("a Sparkplug B group must be valid UTF-8")
	}
	return nil
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
	file    *reload.File[Credentials]
	bcrypts atomic.Int64 // bcrypt comparisons run
	mu      sync.Mutex
	passed  map[string]passedCheck
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

// remembered reports whether password is device's password by the
// remembered check alone (microseconds, no bcrypt): it passed before against
// the hash the file holds now.
func (a *authenticator) remembered(device string, password []byte) bool {
	c, ok := a.file.Get()[device]
	if !ok || len(password) == 0 {
		return false
	}
	digest := sha256.Sum256(password)
	a.mu.Lock()
	p, seen := a.passed[device]
	a.mu.Unlock()
	return seen && p.hash == string(c.Hash) && subtle.ConstantTimeCompare(p.digest[:], digest[:]) == 1
}

// check reports whether password is device's password: the remembered check,
// else bcrypt (tens of milliseconds of CPU at the default cost).
func (a *authenticator) check(device string, password []byte) bool {
	if a.remembered(device, password) {
		return true
	}
	c, ok := a.file.Get()[device]
	if !ok || len(password) == 0 {
		return false
	}
	a.bcrypts.Add(1)
	if bcrypt.CompareHashAndPassword(c.Hash, password) != nil {
		return false
	}
	a.mu.Lock()
	a.passed[device] = passedCheck{hash: string(c.Hash), digest: sha256.Sum256(password)}
	a.mu.Unlock()
	return true
}
