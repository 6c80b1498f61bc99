package broker

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	mqtt "github.com/mochi-mqtt/server/v2"
	"golang.org/x/crypto/bcrypt"

	"firehose/ingest"
	"firehose/internal/devsecret"
	"firehose/internal/reload"
)

// Credentials maps a device id (the MQTT username) to its line of the
// credentials file.
type Credentials map[string]Credential

// Credential is one line of the credentials file, or one enabled device of
// the registry.
type Credential struct {
	// Hash is the hash of the password: bcrypt ($2a$...), for a password a
	// person chose, or a device secret's (fh1$..., see NewSecret).
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
// stored only as hashes: bcrypt for a password a person chose (make a line
// with firehose mqttpasswd), or fh1$... for a random device secret (made by
// firehose devices add; see NewSecret). Errors name file:line.
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
		if err := ValidateHash(f[1]); err != nil {
			return nil, fmt.Errorf("%s:%d: the password of %q %v", file, n, f[0], err)
		}
		if _, dup := creds[f[0]]; dup {
			return nil, fmt.Errorf("%s:%d: device %q appears twice", file, n, f[0])
		}
		var read, write, groups []string
		for _, field := range f[2:] {
			if group, ok := strings.CutPrefix(field, sparkplugField); ok {
				if err := ValidateGroup(group); err != nil {
					return nil, fmt.Errorf("%s:%d: %s of %q: %v", file, n, field, f[0], err)
				}
				groups = append(groups, group)
				continue
			}
			grants := &read
			filter, ok := strings.CutPrefix(field, readField)
			if !ok {
				filter, ok = strings.CutPrefix(field, writeField)
				grants = &write
			}
			if !ok {
				return nil, fmt.Errorf("%s:%d: field %q of %q: want read=FILTER, write=FILTER or sparkplug=GROUP", file, n, field, f[0])
			}
			if err := ValidateGrant(filter); err != nil {
				return nil, fmt.Errorf("%s:%d: %s of %q: %v", file, n, field, f[0], err)
			}
			*grants = append(*grants, filter)
		}
		creds[f[0]] = Credential{Hash: []byte(f[1]), Read: read, Write: write, Sparkplug: groups}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return creds, nil
}

// NewCredential checks a device's password hash (ValidateHash), its read and
// write grants (MQTT topic filters) and its Sparkplug B groups, and returns
// them as a Credential. The registry reads its rows through it.
func NewCredential(hash string, read, write, sparkplug []string) (Credential, error) {
	if err := ValidateHash(hash); err != nil {
		return Credential{}, fmt.Errorf("the password %v", err)
	}
	for _, g := range sparkplug {
		if err := ValidateGroup(g); err != nil {
			return Credential{}, fmt.Errorf("%s%s: %v", sparkplugField, g, err)
		}
	}
	for _, f := range read {
		if err := ValidateGrant(f); err != nil {
			return Credential{}, fmt.Errorf("%s%s: %v", readField, f, err)
		}
	}
	for _, f := range write {
		if err := ValidateGrant(f); err != nil {
			return Credential{}, fmt.Errorf("%s%s: %v", writeField, f, err)
		}
	}
	return Credential{Hash: []byte(hash), Read: read, Write: write, Sparkplug: sparkplug}, nil
}

// ValidateGrant checks a read or write grant: a valid MQTT topic filter, not
// a shared subscription's.
func ValidateGrant(filter string) error {
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

// ValidateGroup checks the group of a sparkplug=GROUP field: one topic
// level as Sparkplug B allows a group_id, and not STATE, which names the
// host applications' STATE topics.
func ValidateGroup(group string) error {
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

// ValidateHash checks a stored password hash: bcrypt ($2a$, $2b$, $2y$) or
// a device secret's (fh1$SALT$MAC, see NewSecret). Its error reads after
// "the password of DEVICE".
func ValidateHash(hash string) error {
	if strings.HasPrefix(hash, secretPrefix) {
		if !devsecret.Valid([]byte(hash)) {
			return fmt.Errorf("is not a device secret's hash: want %sSALT$MAC, %d and %d bytes in unpadded base64url (make one with firehose devices add)", secretPrefix, devsecret.SaltBytes, sha256.Size)
		}
		return nil
	}
	if _, err := bcrypt.Cost([]byte(hash)); err != nil {
		return fmt.Errorf("is not a bcrypt hash (make one with firehose mqttpasswd) nor a device secret's (firehose devices add): %v", err)
	}
	return nil
}

// CredentialSource gives the broker its device credentials and tells it of
// each change: the credentials file (--mqtt-auth FILE) is one, the device
// registry in PostgreSQL (package registry, --mqtt-auth postgres) another.
type CredentialSource interface {
	// Credentials returns the version in use, which no one may modify; nil
	// until the first load succeeded (the broker then refuses every CONNECT
	// with 0x88 server unavailable, 3.1.1 code 3), an empty map once loaded
	// with no device. The broker calls it on every CONNECT, publish and
	// delivery: it must not block (an atomic load).
	Credentials() Credentials
	// Watch keeps the credentials current until ctx ends, whatever fails
	// meanwhile (the last version stays in use). After each new version is
	// in use it calls changed with the version before (nil if none) and the
	// new one, from one goroutine, one call at a time; the broker then
	// disconnects the clients whose credentials were revoked. The broker
	// calls Watch once, from Run.
	Watch(ctx context.Context, changed func(old, cur Credentials))
	// Connected is told of each admitted CONNECT (the registry keeps
	// "last seen"). It is on the connect path: it must not block.
	Connected(device string)
}

// fileSource is the credentials file as a CredentialSource, re-read every
// credentialsCheckInterval.
type fileSource struct {
	f     *reload.File[Credentials]
	every time.Duration
}

func loadCredentialsFile(path string, log *slog.Logger) (*fileSource, error) {
	f, err := reload.Load(path, "MQTT credentials file", ParseCredentials, log)
	if err != nil {
		return nil, err
	}
	log.Info("MQTT device credentials loaded", "file", path, "devices", len(f.Get()))
	return &fileSource{f: f, every: credentialsCheckInterval}, nil
}

// OpenCredentialsFile loads the credentials file at path (see
// ParseCredentials) as a CredentialSource, re-read when it changes while its
// Watch runs. serve gives one to the broker (Config.Credentials) and to the
// HTTP gateway (--http-device-auth mqtt), so both edges check the same
// version.
func OpenCredentialsFile(path string, log *slog.Logger) (CredentialSource, error) {
	return loadCredentialsFile(path, log)
}

func (s *fileSource) Credentials() Credentials { return s.f.Get() }
func (s *fileSource) Connected(string)         {}

func (s *fileSource) Watch(ctx context.Context, changed func(old, cur Credentials)) {
	prev := s.f.Get()
	s.f.Watch(ctx, s.every, func(c Credentials) {
		changed(prev, c)
		prev = c
	})
}

// revoked returns the devices whose credentials in old are revoked by cur:
// removed (or disabled), another password hash (a rotated secret), or a read
// or write grant or Sparkplug B group gone. Their live clients are
// disconnected: what they were admitted with no longer stands.
func revoked(old, cur Credentials) map[string]bool {
	out := map[string]bool{}
	for dev, o := range old {
		c, ok := cur[dev]
		if !ok || !bytes.Equal(o.Hash, c.Hash) || !subset(o.Read, c.Read) || !subset(o.Write, c.Write) || !subset(o.Sparkplug, c.Sparkplug) {
			out[dev] = true
		}
	}
	return out
}

// subset reports whether every element of a is in b.
func subset(a, b []string) bool {
	for _, s := range a {
		found := false
		for _, t := range b {
			if s == t {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// authenticator checks device credentials against its source, kept current.
//
// A device secret's hash (fh1$...) is checked in about a microsecond: one
// HMAC-SHA256. bcrypt is slow on purpose (tens of milliseconds); a fleet
// reconnecting at once would spend minutes of CPU on it. So a bcrypt
// password that passed once is remembered as its SHA-256 next to the hash it
// passed against: a later connect with the same password is checked in
// microseconds, and a changed or removed credential makes the remembered
// check void.
type authenticator struct {
	src     CredentialSource
	bcrypts atomic.Int64 // bcrypt comparisons run
	mu      sync.Mutex
	passed  map[string]passedCheck
}

type passedCheck struct {
	hash   string // the bcrypt hash it passed against
	digest [sha256.Size]byte
}

func newAuthenticator(path string, log *slog.Logger) (*authenticator, error) {
	src, err := loadCredentialsFile(path, log)
	if err != nil {
		return nil, err
	}
	return newAuthenticatorFrom(src), nil
}

func newAuthenticatorFrom(src CredentialSource) *authenticator {
	return &authenticator{src: src, passed: map[string]passedCheck{}}
}

// creds is the version in use; nil until the source first loaded.
func (a *authenticator) creds() Credentials { return a.src.Credentials() }

// quick decides, when it can in microseconds, whether password is device's:
// a device secret's hash is checked at once, a bcrypt password that passed
// before against the hash in use by its remembered digest. decided is false
// when only bcrypt can tell (or the device is unknown: admit treats it as a
// bcrypt check, throttled).
func (a *authenticator) quick(device string, password []byte) (ok, decided bool) {
	c, known := a.creds()[device]
	if !known || len(password) == 0 {
		return false, false
	}
	if isSecretHash(c.Hash) {
		return checkSecret(c.Hash, password), true
	}
	digest := sha256.Sum256(password)
	a.mu.Lock()
	p, seen := a.passed[device]
	a.mu.Unlock()
	if seen && p.hash == string(c.Hash) && subtle.ConstantTimeCompare(p.digest[:], digest[:]) == 1 {
		return true, true
	}
	return false, false
}

// stillValid reports whether password, which admitted device a moment ago,
// still stands against the credentials in use now: quick, a bcrypt hash
// changed since being no longer valid.
func (a *authenticator) stillValid(device string, password []byte) bool {
	ok, decided := a.quick(device, password)
	return ok && decided
}

// check reports whether password is device's password: quick, else bcrypt
// (tens of milliseconds of CPU at the default cost).
func (a *authenticator) check(device string, password []byte) bool {
	if ok, decided := a.quick(device, password); decided {
		return ok
	}
	c, ok := a.creds()[device]
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
