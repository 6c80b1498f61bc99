package console

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed assets
var assetFS embed.FS

var templates = template.Must(template.New("").Funcs(template.FuncMap{
	"count": func(v float64) string { return fmt.Sprintf("%.0f", v) },
	"rate": func(v *float64) string {
		if v == nil {
			return "–"
		}
		return fmt.Sprintf("%.1f", *v)
	},
	"seconds": func(v *float64) string {
		if v == nil {
			return "–"
		}
		return fmt.Sprintf("%.1f s", *v)
	},
	"millis":   millis,
	"owner":    owner,
	"subState": subState,
}).ParseFS(templateFS, "templates/*.html"))

// DefaultInterval is how often the overview's figures are sampled and sent.
const DefaultInterval = time.Second

// Config is what the console shows and who may see it.
type Config struct {
	// Token is --admin-token: the one secret every page asks for.
	Token string
	// Gatherer is the process's Prometheus registry, the figures' source.
	Gatherer prometheus.Gatherer
	// Checks are the services whose health the overview shows.
	Checks []Check
	// Interval between samples; 0 is DefaultInterval.
	Interval time.Duration
	// Owners returns the bridge (host:pid) owning each shard of the
	// deployment, by shard number; nil when this process cannot know
	// (no PostgreSQL here). Read at most every ownersEvery.
	Owners func(context.Context) (map[int]string, error)
	// Subscriptions returns the state of this process's subscriber
	// sessions; nil without the subscriber role.
	Subscriptions func() []Subscription
	// DeadLetters lists and replays the dead letters; nil in a process
	// without PostgreSQL (the page says so).
	DeadLetters DeadLetters
	// Map maps the playground's samples (/console/playground) through the
	// process's own edge settings; nil: the page says there is nothing to try.
	Map MapFunc
	// Devices answers the device pages (/console/devices); nil: none.
	Devices Devices
	// Partitions lists the partitions and the retention (/console/partitions);
	// nil: none.
	Partitions PartitionsFunc
}

// ownersEvery is how often the shards' owners are read from PostgreSQL,
// whatever the number of browsers watching.
const ownersEvery = 5 * time.Second

// Console is the web console's handlers.
type Console struct {
	token, session string
	g              prometheus.Gatherer
	src            sources
	interval       time.Duration
	log            *slog.Logger
	letters        DeadLetters
	mapSample      MapFunc
	devices        Devices
	partitions     PartitionsFunc

	checks     []Check
	healthMu   sync.Mutex
	healthAt   time.Time
	lastHealth []Health

	readOwners func(context.Context) (map[int]string, error)
	ownersMu   sync.Mutex
	ownersAt   time.Time
	owners     map[int]string // nil: not read, or the last read failed
}

// New is the console of cfg; cfg.Token must not be empty.
func New(cfg Config, log *slog.Logger) *Console {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	c := &Console{token: cfg.Token, session: sessionValue(cfg.Token), g: cfg.Gatherer,
		interval: cfg.Interval, log: log.With("component", "console"), readOwners: cfg.Owners, letters: cfg.DeadLetters,
		mapSample: cfg.Map, devices: cfg.Devices, partitions: cfg.Partitions}
	c.checks = cfg.Checks
	c.src = sources{health: c.health, subs: cfg.Subscriptions}
	if cfg.Owners != nil {
		c.src.owners = c.shardOwners
	}
	return c
}

// health is the services' health, pinged at most once an interval
// whatever the number of browsers watching: each viewer's stream samples
// every interval, and they share the pings.
func (c *Console) health(ctx context.Context) []Health {
	c.healthMu.Lock()
	defer c.healthMu.Unlock()
	if time.Since(c.healthAt) < c.interval/2 && c.lastHealth != nil {
		return c.lastHealth
	}
	c.lastHealth, c.healthAt = ping(ctx, c.checks), time.Now()
	return c.lastHealth
}

// shardOwners is the shards' owners as last read, read again when older
// than ownersEvery; nil when the read failed.
func (c *Console) shardOwners(ctx context.Context) map[int]string {
	c.ownersMu.Lock()
	defer c.ownersMu.Unlock()
	if time.Since(c.ownersAt) < ownersEvery {
		return c.owners
	}
	rctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	owners, err := c.readOwners(rctx)
	if err != nil {
		c.log.Debug("read the shards' owners", "err", err)
		owners = nil
	}
	c.owners, c.ownersAt = owners, time.Now()
	return owners
}

// Register adds the console's routes under /console/ to mux.
func (c *Console) Register(mux *http.ServeMux) {
	mux.Handle("GET /console", http.RedirectHandler("/console/", http.StatusSeeOther))
	mux.HandleFunc("GET /console/{$}", c.overview)
	mux.HandleFunc("POST /console/login", c.login)
	mux.HandleFunc("POST /console/logout", c.logout)
	mux.HandleFunc("GET /console/events", c.events)
	c.registerDeadLetters(mux)
	mux.HandleFunc("GET /console/playground", c.playground)
	mux.HandleFunc("POST /console/playground", c.playground)
	mux.HandleFunc("GET /console/devices", c.deviceSearch)
	mux.HandleFunc("GET /console/devices/{id}", c.device)
	mux.HandleFunc("GET /console/partitions", c.partitionsPage)
	assets, _ := fs.Sub(assetFS, "assets")
	mux.Handle("GET /console/assets/", http.StripPrefix("/console/assets/", http.FileServerFS(assets)))
}

func (c *Console) render(w http.ResponseWriter, code int, name string, data any) {
	var buf bytes.Buffer
	if err := templates.ExecuteTemplate(&buf, name, data); err != nil {
		c.log.Error("render page", "page", name, "err", err)
		http.Error(w, "cannot render the page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

func (c *Console) overview(w http.ResponseWriter, r *http.Request) {
	if !c.authorized(r) {
		c.render(w, http.StatusUnauthorized, "login.html", loginPage{})
		return
	}
	s, err := sample(r.Context(), c.g, c.src, nil, nil)
	if err != nil {
		http.Error(w, "gather metrics: "+err.Error(), http.StatusInternalServerError)
		return
	}
	c.render(w, http.StatusOK, "overview.html", s)
}

type loginPage struct{ Wrong bool }

// login takes the token from the form once and answers with the session
// cookie: HttpOnly (no script reads it) and SameSite=Strict (no other site's
// page sends it).
func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		http.Error(w, "cross-origin request refused", http.StatusForbidden)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	if err := r.ParseForm(); err != nil || !equal(r.PostFormValue("token"), c.token) {
		c.log.Warn("console login refused", "remote", r.RemoteAddr)
		c.render(w, http.StatusUnauthorized, "login.html", loginPage{Wrong: true})
		return
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: c.session, Path: "/console/",
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	http.Redirect(w, r, "/console/", http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		http.Error(w, "cross-origin request refused", http.StatusForbidden)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/console/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/console/", http.StatusSeeOther)
}

// events streams a snapshot every interval as a server-sent event
// "snapshot" (JSON of Snapshot) until the client goes or the server stops.
func (c *Console) events(w http.ResponseWriter, r *http.Request) {
	if !c.authorized(r) {
		http.Error(w, "the console needs --admin-token: log in at /console/", http.StatusUnauthorized)
		return
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	tick := time.NewTicker(c.interval)
	defer tick.Stop()
	var prev *Snapshot
	var window []*Snapshot // the last latencyWindow samples, oldest first: the latencies' base
	for {
		var base *Snapshot
		if len(window) > 0 {
			base = window[0]
		}
		s, err := sample(r.Context(), c.g, c.src, prev, base)
		if err != nil {
			c.log.Warn("gather metrics", "err", err)
		} else {
			prev = s
			if window = append(window, s); len(window) > latencyWindow {
				window = window[1:]
			}
			b, _ := json.Marshal(s)
			if _, err := fmt.Fprintf(w, "event: snapshot\ndata: %s\n\n", b); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
		}
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
		}
	}
}
