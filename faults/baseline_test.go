package faults

import (
	"testing"
	"time"
)

// TestBaseline runs the load with no fault: the reference every scenario
// is compared with, and a check of the harness itself.
func TestBaseline(t *testing.T) {
	skipShort(t)
	t.Parallel()
	svc := SharedServices(t)
	s := StartStack(t, svc)
	l := StartLoad(t, s, LoadOpts{Duration: scale(5*time.Second, 30*time.Second)})
	rep := l.Wait(5 * time.Minute)
	AssertExactlyOnce(t, rep, l)
	r := ResultOf(rep)
	r.Scenario, r.Load, r.Faults = "0. baseline", LoadDesc(rep), "none"
	Record(t, r)
	s.Stop(20 * time.Second)
}

// TestHarnessOwnServers checks the throwaway Redis and PostgreSQL the
// scenarios kill: they start, stop and start again on the same port.
func TestHarnessOwnServers(t *testing.T) {
	skipShort(t)
	t.Parallel()
	r := StartRedis(t, true)
	r.Kill()
	r.Start()
	c := StartPGCluster(t)
	url := c.CreateDB("fh")
	if n := QueryInt(t, url, "SELECT 1"); n != 1 {
		t.Fatalf("SELECT 1 = %d", n)
	}
	c.Stop()
	c.Start()
	if n := QueryInt(t, url, "SELECT 2"); n != 2 {
		t.Fatalf("SELECT 2 = %d", n)
	}
}
