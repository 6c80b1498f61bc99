package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"firehose/bridge"
	"firehose/broker"
	"firehose/partition"
	"firehose/registry"
	"firehose/stream"

	"firehose/internal/configcheck"
	"firehose/internal/console"
)

// playground is the console's mapping playground over this process's edge
// settings (rules, readings topic, limits, shards): the sample goes
// through configcheck exactly as firehose config check --topic/--endpoint
// sends it, and nothing is stored.
func (st *stack) playground(s console.Sample) (*console.Mapped, error) {
	cfg := st.cfg
	edges := configcheck.Edges{MQTT: cfg.MQTT, HTTP: cfg.HTTP, Streams: cfg.Streams}
	var out *configcheck.Sample
	switch s.Protocol {
	case "mqtt":
		out = configcheck.MQTT(edges, s.Topic, []byte(s.Payload), time.Now())
	case "http":
		if !knownEndpoint(s.Path) {
			return nil, fmt.Errorf("path %q: want %s (with ?rule=NAME for a rule's endpoint) or %s", s.Path, configcheck.EndpointV1, configcheck.EndpointFast)
		}
		var err error
		out, err = configcheck.HTTP(edges, configcheck.HTTPRequest{Endpoint: s.Path, Body: s.Payload, ContentType: "application/json", DeviceID: s.DeviceID})
		if err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("protocol %q: want mqtt or http", s.Protocol)
	}
	return consoleMapped(out), nil
}

// consoleMapped is what config check found, as the console shows it.
func consoleMapped(s *configcheck.Sample) *console.Mapped {
	m := &console.Mapped{Note: s.Note}
	if r := s.Refused; r != nil {
		m.Refused = &console.Refused{Reason: r.Reason, Answer: r.MQTT}
		if r.Status != 0 {
			m.Refused.Answer = strconv.Itoa(r.Status) + " " + string(r.Answer)
		}
		return m
	}
	for _, r := range s.Rows {
		m.Rows = append(m.Rows, console.ReadingRow{DeviceID: r.DeviceID, Metric: r.Metric,
			TS: r.TS.Format(time.RFC3339Nano), ReceivedAt: r.ReceivedAt.Format(time.RFC3339Nano),
			Reading: strconv.FormatFloat(r.Reading, 'g', -1, 64), Payload: string(r.Payload), Stream: r.Stream})
	}
	for _, r := range s.TypedRows {
		row := console.TypedRow{Table: r.Table, Stream: r.Stream}
		for _, c := range r.Columns {
			row.Columns = append(row.Columns, console.Column{Name: c.Name, Type: c.Type, Value: c.Text()})
		}
		m.TypedRows = append(m.TypedRows, row)
	}
	return m
}

// consoleConfig is the console of this process: its metrics, health
// checks and the pages over its edge settings and services.
func (st *stack) consoleConfig(spb *stream.SparkplugStore) console.Config {
	cfg := console.Config{Token: st.cfg.AdminToken, Gatherer: st.reg, Checks: st.healthChecks(), Map: st.playground,
		Devices:     consoleDevices{pg: st.pg, mqtt: st.mqtt, registry: st.cfg.MQTT.AuthFile == broker.AuthRegistry},
		DeadLetters: st.deadLetters(spb)}
	if st.pg != nil {
		cfg.Partitions = st.partitions
		cfg.Owners = func(ctx context.Context) (map[int]string, error) { return bridge.Owners(ctx, st.pg, st.cfg.Streams) }
	}
	if st.sub != nil {
		cfg.Subscriptions = func() []console.Subscription {
			s := st.sub.State()
			return []console.Subscription{{Broker: s.Broker, ClientID: s.ClientID, Connected: s.Connected,
				SessionPresent: s.SessionPresent, Protocol: s.Protocol, Since: s.Since, LastError: s.LastError,
				InFlight: s.InFlight, Received: s.Received, Redeliveries: s.Redeliveries}}
		}
	}
	return cfg
}

// consoleDevices is the console's device pages over this process's
// PostgreSQL (readings and the registry) and its broker.
type consoleDevices struct {
	pg       *pgxpool.Pool  // nil: no role here uses PostgreSQL
	mqtt     *broker.Broker // nil: no broker role here
	registry bool           // --mqtt-auth postgres
}

// errNoPostgres is a device page's source that needs a pool this process
// does not have.
var errNoPostgres = errors.New("this process does not connect to PostgreSQL (no bridge or httpgw role here)")

func (d consoleDevices) Search(ctx context.Context, prefix string, limit int) ([]string, error) {
	var ids []string
	if d.registry {
		if d.pg == nil {
			return nil, errNoPostgres
		}
		var err error
		if ids, err = registry.Search(ctx, d.pg, prefix, limit); err != nil {
			return nil, err
		}
	}
	if d.mqtt != nil {
		ids = append(ids, d.mqtt.ConnectedDevices(prefix, limit)...)
		slices.Sort(ids)
		ids = slices.Compact(ids)
	}
	return ids[:min(len(ids), limit)], nil
}

func (d consoleDevices) Device(ctx context.Context, id string, limit int) *console.Device {
	dev := &console.Device{ID: id}
	if d.mqtt != nil {
		c := d.mqtt.Connected(id)
		dev.Connected = &c
	}
	if d.pg == nil {
		dev.Errors = append(dev.Errors, "readings: "+errNoPostgres.Error())
		return dev
	}
	var err error
	if dev.Readings, err = latestReadings(ctx, d.pg, id, limit); err != nil {
		dev.Errors = append(dev.Errors, err.Error())
	}
	for _, r := range dev.Readings {
		if r.ReceivedAt.After(dev.LastReading) {
			dev.LastReading = r.ReceivedAt
		}
	}
	if d.registry {
		reg, ok, err := registry.Get(ctx, d.pg, id)
		if err != nil {
			dev.Errors = append(dev.Errors, err.Error())
		} else {
			dev.Credentials = &console.Credentials{Registered: ok, Enabled: reg.Enabled, Read: reg.Read, Write: reg.Write,
				Sparkplug: reg.Sparkplug, Created: reg.CreatedAt, LastSeen: reg.LastSeen}
		}
	}
	return dev
}

// latestReadings is device id's newest limit rows of readings, by ts
// (readings_device_ts_idx).
func latestReadings(ctx context.Context, pg *pgxpool.Pool, id string, limit int) ([]console.DeviceReading, error) {
	rows, err := pg.Query(ctx, `SELECT ts, received_at, metric, reading, coalesce(payload::text, '')
		FROM readings WHERE device_id = $1 ORDER BY ts DESC LIMIT $2`, id, limit)
	if err != nil {
		return nil, fmt.Errorf("read the readings of %q: %w", id, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (console.DeviceReading, error) {
		var dr console.DeviceReading
		err := r.Scan(&dr.TS, &dr.ReceivedAt, &dr.Metric, &dr.Reading, &dr.Payload)
		return dr, err
	})
	if err != nil {
		return nil, fmt.Errorf("read the readings of %q: %w", id, err)
	}
	return out, nil
}

// partitions is the console's partitions page: the partitions of readings
// and of the rules' typed tables (partition.List), the retention in force
// in this process (--retention, or the deployment's recorded one) and the
// partition it drops next.
func (st *stack) partitions(ctx context.Context) (*console.Partitions, error) {
	roles, _ := st.cfg.roles()
	out := &console.Partitions{Retention: st.cfg.Partition.Retention, Maintained: slices.Contains(roles, roleBridge)}
	names := []string{partition.Parent}
	for _, t := range st.cfg.MQTT.Rules.Tables() {
		names = append(names, t.Name)
	}
	for _, name := range names {
		ps, err := partition.List(ctx, st.pg, name)
		if err != nil {
			return nil, err
		}
		t := console.PartitionedTable{Name: name}
		for _, p := range ps {
			t.Partitions = append(t.Partitions, console.Partition{Name: p.Name, From: p.From, To: p.To, Rows: p.Rows, Bytes: p.Bytes})
			if p.To == nil {
				continue
			}
			if at := partition.DropAt(*p.To, out.Retention); !at.IsZero() && (out.NextDrop == nil || at.Before(out.NextDrop.At)) {
				out.NextDrop = &console.Drop{Table: name, Partition: p.Name, At: at}
			}
		}
		out.Tables = append(out.Tables, t)
	}
	return out, nil
}
