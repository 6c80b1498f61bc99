package ticketkeys

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"firehose/internal/reload"
)

// KeySize is the size of a session ticket key in bytes.
const KeySize = 32

// Keys are the session ticket keys of a key file, kept current by Watch.
// It is safe for concurrent use.
type Keys struct {
	file *reload.File[[][KeySize]byte]
	// ring holds the keys in use (tls.Config.SetSessionTicketKeys); the
	// configurations Apply set up encrypt and decrypt their tickets with it,
	// so that a new version reaches them, and their clones (http.Server
	// clones its TLSConfig), without keeping a list of them.
	ring *tls.Config
	log  *slog.Logger
}

// Load reads the key file path; an unreadable file, a line that is not a
// 32-byte key in hex or base64, or a file without a key is an error naming
// flag and the line.
func Load(path, flag string, log *slog.Logger) (*Keys, error) {
	parse := func(path string, data []byte) ([][KeySize]byte, error) {
		keys, err := Parse(path, data)
		if err != nil {
			return nil, fmt.Errorf("%s %w", flag, err)
		}
		return keys, nil
	}
	f, err := reload.Load(path, "TLS session ticket key file ("+flag+")", parse, log)
	if err != nil {
		return nil, err
	}
	k := &Keys{file: f, ring: &tls.Config{}, log: log}
	k.use(f.Get())
	return k, nil
}

// Parse parses a key file: one key a line, 64 hex digits or the base64
// (standard, padded or not) of 32 bytes; blank lines and lines starting
// with # are skipped. The first key encrypts, all decrypt.
func Parse(path string, data []byte) ([][KeySize]byte, error) {
	var keys [][KeySize]byte
	for i, line := range bytes.Split(data, []byte("\n")) {
		s := strings.TrimSpace(string(line))
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		key, err := parseKey(s)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, i+1, err)
		}
		keys = append(keys, key)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: no session ticket key in the file: want lines of 32 random bytes in hex (openssl rand -hex 32)", path)
	}
	return keys, nil
}

// parseKey decodes one key: hex if it is hex, else base64.
func parseKey(s string) ([KeySize]byte, error) {
	var key [KeySize]byte
	b, err := hex.DecodeString(s)
	if err != nil {
		if b, err = base64.StdEncoding.DecodeString(s); err != nil {
			if b, err = base64.RawStdEncoding.DecodeString(s); err != nil {
				return key, fmt.Errorf("a key is 32 bytes in hex (64 digits) or base64 (44 characters): %d characters that are neither", len(s))
			}
		}
	}
	if len(b) != KeySize {
		return key, fmt.Errorf("key of %d bytes, want %d (openssl rand -hex 32)", len(b), KeySize)
	}
	copy(key[:], b)
	return key, nil
}

// use puts a version of the file in use.
func (k *Keys) use(keys [][KeySize]byte) {
	k.ring.SetSessionTicketKeys(keys)
	k.log.Info("TLS session ticket keys loaded", "file", k.file.Path(), "keys", len(keys))
}

// Apply makes tc encrypt the session tickets it issues with the file's
// first key and accept tickets of any of its keys, the keys in use at each
// handshake (a clone of tc made afterwards does the same). A ticket no key
// decrypts is ignored: that client makes a full handshake.
func (k *Keys) Apply(tc *tls.Config) {
	tc.SessionTicketsDisabled = false
	tc.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		return k.ring.EncryptTicket(cs, ss)
	}
	tc.UnwrapSession = func(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
		return k.ring.DecryptTicket(identity, cs)
	}
}

// Watch re-reads the key file every interval until ctx ends and puts each
// new version in use. A file that became unreadable or invalid keeps the
// previous keys; the error is logged once.
func (k *Keys) Watch(ctx context.Context, every time.Duration) {
	k.file.Watch(ctx, every, k.use)
}
