// Package testenv gives integration tests their own PostgreSQL database and
// Redis key prefix on the real services of this machine, and removes them
// when the test ends, so tests run in parallel with each other and with a
// running demo.
//
//	pgURL := testenv.Postgres(t)        // a fresh, migrated database
//	rdb, prefix := testenv.Redis(t)     // a client and a unique key prefix
//
// The services are found through FIREHOSE_TEST_POSTGRES (an admin URL,
// default postgres://127.0.0.1:5432/postgres?sslmode=disable) and
// FIREHOSE_TEST_REDIS (default redis://127.0.0.1:6379/0). Under -short the
// integration tests are skipped; otherwise an unreachable service fails the
// test with a hint (scripts/services.sh ensure starts them).
//
// The packages that run firehose as a process build it once in their
// TestMain with RunWithFirehose.
package testenv
