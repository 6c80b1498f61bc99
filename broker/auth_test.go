package broker

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// cheapHash is a bcrypt hash at the lowest cost, for tests that do not care
// how slow bcrypt is.
func cheapHash(t *testing.T, password string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

func TestParseCredentials(t *testing.T) {
	h1, h2 := cheapHash(t, "pw-one"), cheapHash(t, "pw-two")
	for _, tc := range []struct {
		name     string
		data     string
		want     map[string]string   // device -> hash
		wantRead map[string][]string // device -> read grants
		wantSpb  map[string][]string // device -> Sparkplug B groups
		wantErr  string              // substring; "" means valid
	}{
		{name: "empty file", data: "", want: map[string]string{}},
		{name: "comments and blank lines", data: "# devices\n\n  # indented comment\n", want: map[string]string{}},
		{name: "two devices", data: "# id hash\npump-7 " + h1 + "\n\n  valve-2\t" + h2 + "  \n", want: map[string]string{"pump-7": h1, "valve-2": h2}},
		{name: "CRLF line ends", data: "pump-7 " + h1 + "\r\nvalve-2 " + h2 + "\r\n", want: map[string]string{"pump-7": h1, "valve-2": h2}},
		{name: "no final newline", data: "pump-7 " + h1, want: map[string]string{"pump-7": h1}},
		{name: "one field", data: "# x\npump-7\n", wantErr: `creds:2: want "device-id bcrypt-hash [read=FILTER ...] [write=FILTER ...] [sparkplug=GROUP ...]", got 1 fields`},
		{name: "third field not a grant", data: "pump-7 " + h1 + " extra\n", wantErr: `creds:1: field "extra" of "pump-7": want read=FILTER`},
		{name: "grants", data: "dash " + h1 + " read=devices/+/readings read=# read=$SYS/#\npump-7 " + h2 + "\n",
			want: map[string]string{"dash": h1, "pump-7": h2}, wantRead: map[string][]string{"dash": {"devices/+/readings", "#", "$SYS/#"}}},
		{name: "write grants", data: "scada " + h1 + " read=spBv1.0/# write=spBv1.0/+/NCMD/# write=spBv1.0/+/DCMD/#\n",
			want: map[string]string{"scada": h1}, wantRead: map[string][]string{"scada": {"spBv1.0/#"}}},
		{name: "sparkplug groups", data: "edge1 " + h1 + " sparkplug=plant1 sparkplug=plant-2 write=spBv1.0/STATE/edge1\n",
			want: map[string]string{"edge1": h1}, wantSpb: map[string][]string{"edge1": {"plant1", "plant-2"}}},
		{name: "empty sparkplug group", data: "edge1 " + h1 + " sparkplug=\n", wantErr: `creds:1: sparkplug= of "edge1": empty Sparkplug B group`},
		{name: "sparkplug group with a slash", data: "edge1 " + h1 + " sparkplug=plant/edge1\n", wantErr: "holds no /, +, # or NUL"},
		{name: "sparkplug group wildcard", data: "edge1 " + h1 + " sparkplug=+\n", wantErr: "holds no /, +, # or NUL"},
		{name: "sparkplug group STATE", data: "edge1 " + h1 + " sparkplug=STATE\n", wantErr: "not a group"},
		{name: "bad write grant", data: "scada " + h1 + " write=spBv1.0/#/NCMD\n", wantErr: "not a valid MQTT topic filter"},
		{name: "empty grant", data: "dash " + h1 + " read=\n", wantErr: `creds:1: read= of "dash": empty topic filter`},
		{name: "grant with # inside", data: "dash " + h1 + " read=devices/#/readings\n", wantErr: "not a valid MQTT topic filter"},
		{name: "grant with a partial wildcard", data: "dash " + h1 + " read=devices/a+/readings\n", wantErr: "must be whole levels"},
		{name: "shared grant", data: "dash " + h1 + " read=$share/g/devices/#\n", wantErr: "grant the filter itself"},
		{name: "plain-text password", data: "pump-7 " + h1 + "\nvalve-2 secret\n", wantErr: `creds:2: the password of "valve-2" is not a bcrypt hash`},
		{name: "truncated hash", data: "pump-7 " + h1[:20] + "\n", wantErr: "creds:1: the password of \"pump-7\" is not a bcrypt hash"},
		{name: "device id with slash", data: "a/b " + h1 + "\n", wantErr: `creds:1: device id "a/b"`},
		{name: "device id with wildcard", data: "\n\nsensor+ " + h1 + "\n", wantErr: `creds:3: device id "sensor+"`},
		{name: "duplicate device", data: "pump-7 " + h1 + "\n# again\npump-7 " + h2 + "\n", wantErr: `creds:3: device "pump-7" appears twice`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseCredentials("creds", []byte(tc.data))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseCredentials = %v, %v; want an error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseCredentials: %v", err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("ParseCredentials = %d devices, want %d", len(got), len(tc.want))
			}
			for dev, h := range tc.want {
				if string(got[dev].Hash) != h {
					t.Errorf("hash of %s = %q, want %q", dev, got[dev].Hash, h)
				}
				if g, w := fmt.Sprint(got[dev].Read), fmt.Sprint(tc.wantRead[dev]); g != w {
					t.Errorf("read grants of %s = %s, want %s", dev, g, w)
				}
				if g, w := fmt.Sprint(got[dev].Sparkplug), fmt.Sprint(tc.wantSpb[dev]); g != w {
					t.Errorf("Sparkplug B groups of %s = %s, want %s", dev, g, w)
				}
			}
		})
	}
}

func TestHashPassword(t *testing.T) {
	if _, err := HashPassword(""); err == nil {
		t.Error("HashPassword(\"\") succeeded; an empty password must be refused")
	}
	const pw = "correct horse battery staple"
	h, err := HashPassword(pw)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(h, pw) {
		t.Fatalf("the hash %q contains the password", h)
	}
	if err := bcrypt.CompareHashAndPassword([]byte(h), []byte(pw)); err != nil {
		t.Errorf("hash does not verify: %v", err)
	}
	c, err := ParseCredentials("f", []byte("pump-7 "+h+"\n"))
	if err != nil || string(c["pump-7"].Hash) != h {
		t.Errorf("a line made with HashPassword does not parse: %v, %v", c, err)
	}
}

// TestAuthenticatorCheck covers the remembered check: a password that passed
// once passes again quickly, a wrong one never passes, and a changed or
// removed line voids what was remembered.
func TestAuthenticatorCheck(t *testing.T) {
	path := filepath.Join(t.TempDir(), "creds")
	write := func(lines ...string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("pump-7 "+cheapHash(t, "old"), "valve-2 "+cheapHash(t, "v"))
	a, err := newAuthenticator(path, discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, device, password string
		want                   bool
	}{
		{"right password", "pump-7", "old", true},
		{"right password again (remembered)", "pump-7", "old", true},
		{"wrong password after a right one", "pump-7", "olde", false},
		{"another device's password", "pump-7", "v", false},
		{"empty password", "pump-7", "", false},
		{"unknown device", "ghost", "old", false},
		{"other device", "valve-2", "v", true},
	} {
		if got := a.check(tc.device, []byte(tc.password)); got != tc.want {
			t.Errorf("%s: check(%q, %q) = %v, want %v", tc.name, tc.device, tc.password, got, tc.want)
		}
	}

	// The password changes: the remembered old one must not pass any more.
	changed := make(chan Credentials, 64)
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() {
		a.src.(*fileSource).f.Watch(ctx, 10*time.Millisecond, func(c Credentials) {
			select {
			case changed <- c:
			default:
			}
		})
	})
	defer func() { cancel(); wg.Wait() }()
	newHash := cheapHash(t, "new")
	write("pump-7 " + newHash)
	// The watcher may catch the file half-written (os.WriteFile truncates
	// first) and load that version; wait for the complete one.
	deadline := time.After(10 * time.Second)
	for loaded := false; !loaded; {
		select {
		case c := <-changed:
			loaded = string(c["pump-7"].Hash) == newHash
		case <-deadline:
			t.Fatal("the rewritten credentials file was not reloaded within 10s")
		}
	}
	if a.check("pump-7", []byte("old")) {
		t.Error("the old password still passes after the file changed it")
	}
	if !a.check("pump-7", []byte("new")) {
		t.Error("the new password does not pass")
	}
	if a.check("valve-2", []byte("v")) {
		t.Error("a device removed from the file still passes")
	}
}
