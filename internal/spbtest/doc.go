// Package spbtest encodes Sparkplug B payloads for tests: births, data and
// deaths with Double metrics, by name and alias.
package spbtest
