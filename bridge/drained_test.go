package bridge

import "firehose/internal/testenv"

// waitDrained waits until the bridge has committed every entry written to
// the env's streams so far: each checkpoint at its stream's last id
// (testenv.WaitDrained). The bridge commits a stream in id order, so rows
// counted after it include every row any entry written before would ever
// produce, a wrongly repeated one included: no sleep "for it to show".
func (e *env) waitDrained() {
	e.t.Helper()
	testenv.WaitDrained(e.t, e.rdb, e.pgURL, e.streams.Keys())
}
