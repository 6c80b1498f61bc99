package faults

// Helpers to drive a scenario by conditions rather than by time: stop a
// load when the test has seen what it wanted in its middle. (To count rows
// once the bridge has committed everything: edgeWaitDrained, or
// testenv.WaitDrained.)

import "syscall"

// Interrupt stops the load's sending (SIGINT: the simulator then waits for
// the readings to land and verifies, as at the end of its --duration). A
// scenario that wants its fault in the middle of the load runs the load
// with a duration longer than it needs and interrupts it once the fault
// has happened and more was sent after it; Wait collects the report.
func (l *Load) Interrupt() { l.proc.Signal(syscall.SIGINT) }
