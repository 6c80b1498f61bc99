package main

import (
	"fmt"
	"strconv"
	"time"

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
func (st *stack) consoleConfig() console.Config {
	return console.Config{Token: st.cfg.AdminToken, Gatherer: st.reg, Checks: st.healthChecks(), Map: st.playground}
}
