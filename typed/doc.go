// Package typed describes the typed tables mapping rules route readings to:
// the PostgreSQL types a column may have, a row's values, the table a rule
// declares (columns, time column, indexes), and how a row travels inside a
// stream entry. It imports nothing of firehose's.
package typed
