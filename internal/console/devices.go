package console

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Devices is what the device pages read of the deployment. The console
// imports none of the roles: cmd/firehose implements it over PostgreSQL,
// the broker of this process and the device registry.
type Devices interface {
	// Search is up to limit ids of devices that start with prefix, in
	// order: those of the registry, when there is one, and those connected
	// to this process's broker. It does not scan readings.
	Search(ctx context.Context, prefix string, limit int) ([]string, error)
	// Device is what is known of device id, with its latest readings
	// (up to limit rows). A source that cannot be read is named in
	// Device.Errors, the others are still shown.
	Device(ctx context.Context, id string, limit int) *Device
}

// Device is one device as its page shows it.
type Device struct {
	ID string
	// Readings are its latest rows of the readings table, newest first
	// (typed tables are not searched).
	Readings []DeviceReading
	// LastReading is when the newest of Readings was received; zero: none.
	LastReading time.Time
	// Connected says whether a client of the device is connected to this
	// process's broker; nil: no broker role here.
	Connected *bool
	// Credentials are the device's in the registry (--mqtt-auth postgres);
	// nil: no registry here.
	Credentials *Credentials
	// Errors are the sources that could not be read, with why.
	Errors []string
}

// IsConnected says whether Connected says yes.
func (d *Device) IsConnected() bool { return d.Connected != nil && *d.Connected }

// DeviceReading is one row of readings.
type DeviceReading struct {
	TS, ReceivedAt time.Time
	Metric         string
	Reading        float64
	Payload        string // "" for none
}

// Credentials are a device's entry in the registry.
type Credentials struct {
	Registered             bool // false: the registry does not hold the device
	Enabled                bool
	Read, Write, Sparkplug []string
	Created                time.Time
	LastSeen               time.Time // last connected (within the brokers' flush interval); zero: never
}

// Bounds of the device pages.
const (
	deviceReadings = 20 // latest readings on a device's page
	searchResults  = 50
	deviceTimeout  = 5 * time.Second
)

type searchPage struct {
	Query   string
	IDs     []string
	Error   string
	Enabled bool
}

// deviceSearch is the search form and, given ?q=, the matching device ids.
// An id that matches exactly goes straight to its page.
func (c *Console) deviceSearch(w http.ResponseWriter, r *http.Request) {
	if !c.authorized(r) {
		c.render(w, http.StatusUnauthorized, "login.html", loginPage{})
		return
	}
	page := searchPage{Query: strings.TrimSpace(r.URL.Query().Get("q")), Enabled: c.devices != nil}
	if page.Query != "" && c.devices != nil {
		ctx, cancel := context.WithTimeout(r.Context(), deviceTimeout)
		defer cancel()
		ids, err := c.devices.Search(ctx, page.Query, searchResults)
		if err != nil {
			page.Error = err.Error()
		}
		page.IDs = ids
		if err == nil && (len(ids) == 0 || len(ids) == 1 && ids[0] == page.Query) {
			// The device itself, or one neither registered nor connected
			// here, whose readings its page may still show.
			http.Redirect(w, r, "/console/devices/"+url.PathEscape(page.Query), http.StatusSeeOther)
			return
		}
	}
	c.render(w, http.StatusOK, "devices.html", page)
}

// device is one device's page.
func (c *Console) device(w http.ResponseWriter, r *http.Request) {
	if !c.authorized(r) {
		c.render(w, http.StatusUnauthorized, "login.html", loginPage{})
		return
	}
	if c.devices == nil {
		http.Error(w, "this process has no device pages", http.StatusNotFound)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), deviceTimeout)
	defer cancel()
	c.render(w, http.StatusOK, "device.html", c.devices.Device(ctx, r.PathValue("id"), deviceReadings))
}
