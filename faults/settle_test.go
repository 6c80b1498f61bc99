package faults

// Helpers to drive a scenario by conditions rather than by time: stop a
// load when the test has seen what it wanted in its middle, and wait until
// the bridge has committed everything before counting rows.

import (
	"syscall"
	"testing"

	"github.com/redis/go-redis/v9"

	"firehose/internal/testenv"
)

// Interrupt stops the load's sending (SIGINT: the simulator then waits for
// the readings to land and verifies, as at the end of its --duration). A
// scenario that wants its fault in the middle of the load runs the load
// with a duration longer than it needs and interrupts it once the fault
// has happened and more was sent after it; Wait collects the report.
func (l *Load) Interrupt() { l.proc.Signal(syscall.SIGINT) }

// WaitDrained waits, as long as the test may run, until the bridge has
// committed every entry written to the deployment's streams so far (each
// stream's checkpoint at its last-generated-id: testenv.WaitDrained). Rows
// counted after it are final unless something writes again.
func WaitDrained(t *testing.T, rdb redis.Cmdable, dbURL string, keys []string) {
	t.Helper()
	testenv.WaitDrained(t, rdb, dbURL, keys)
}
