package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// userHZ is the unit of the times in /proc/PID/stat: USER_HZ, which Linux
// fixes at 100 for user space on every architecture it exports clock_t to.
const userHZ = 100

type procs []string

func (p *procs) String() string     { return strings.Join(*p, " ") }
func (p *procs) Set(s string) error { *p = append(*p, s); return nil }

// key tells a process from a later one that reuses its pid.
type key struct {
	pid   int
	start uint64
}

// track is one process's CPU: its value at the base and the last one seen.
type track struct {
	base, last uint64
}

// group sums the CPU of its processes over the window.
type group struct {
	name  string
	procs map[key]*track
}

func (g *group) see(k key, ticks uint64, first bool) {
	t, ok := g.procs[k]
	if !ok {
		t = &track{}
		if first {
			t.base = ticks
		}
		g.procs[k] = t
	}
	t.last = ticks
}

func (g *group) seconds() float64 {
	var sum uint64
	for _, t := range g.procs {
		sum += t.last - t.base
	}
	return float64(sum) / userHZ
}

// readStat returns a process's start time and its CPU in ticks.
func readStat(pid int) (key, uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return key{}, 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return key{}, 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return key{}, 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	// f[0] is field 3 (state): utime, stime, cutime, cstime are fields
	// 14-17, starttime field 22.
	var ticks uint64
	for _, s := range f[11:15] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return key{}, 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += uint64(max(v, 0))
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return key{}, 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return key{pid, start}, ticks, nil
}

type sampler struct {
	groups    []*group
	pids      map[*group][]int
	pg        *pgx.Conn
	db        string
	loadApp   string
	postgres  *group
	pgLoadgen *group
}

func (s *sampler) sample(ctx context.Context, first bool) {
	for g, pids := range s.pids {
		for _, pid := range pids {
			if k, t, err := readStat(pid); err == nil {
				g.see(k, t, first)
			}
		}
	}
	if s.pg == nil {
		return
	}
	qctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	rows, err := s.pg.Query(qctx, `SELECT pid, coalesce(application_name, '') FROM pg_stat_activity WHERE datname = $1`, s.db)
	if err != nil {
		log.Printf("pg_stat_activity: %v", err)
		return
	}
	type backend struct {
		pid int
		app string
	}
	var bs []backend
	for rows.Next() {
		var b backend
		if err := rows.Scan(&b.pid, &b.app); err == nil {
			bs = append(bs, b)
		}
	}
	rows.Close()
	for _, b := range bs {
		k, t, err := readStat(b.pid)
		if err != nil {
			continue
		}
		g := s.postgres
		if s.loadApp != "" && b.app == s.loadApp {
			g = s.pgLoadgen
		}
		g.see(k, t, first)
	}
}

func main() {
	var ps procs
	flag.Var(&ps, "p", "name=pid[,pid...]: a group of processes to measure (repeatable)")
	out := flag.String("out", "", "file to write the result to (default stdout)")
	interval := flag.Duration("interval", 100*time.Millisecond, "how often to sample")
	pgURL := flag.String("pg", "postgres://127.0.0.1:5432/postgres?sslmode=disable", "PostgreSQL URL to read pg_stat_activity from (connect to another database than -db)")
	db := flag.String("db", "", "database whose backends are measured (group postgres); empty: none")
	loadApp := flag.String("pg-loadgen-app", "", "application_name of the load generator's PostgreSQL sessions (group postgres-loadgen)")
	ready := flag.String("ready", "", "file to create once the first sample is taken")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("proccpu: ")

	s := &sampler{pids: map[*group][]int{}, db: *db, loadApp: *loadApp}
	for _, p := range ps {
		name, list, ok := strings.Cut(p, "=")
		if !ok || name == "" {
			log.Fatalf("-p %q: want name=pid[,pid...]", p)
		}
		g := &group{name: name, procs: map[key]*track{}}
		for _, f := range strings.Split(list, ",") {
			pid, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || pid <= 0 {
				log.Fatalf("-p %q: %q is not a pid", p, f)
			}
			s.pids[g] = append(s.pids[g], pid)
		}
		s.groups = append(s.groups, g)
	}
	ctx := context.Background()
	if *db != "" {
		conn, err := pgx.Connect(ctx, *pgURL)
		if err != nil {
			log.Fatalf("connect to %s: %v", *pgURL, err)
		}
		defer conn.Close(ctx)
		s.pg = conn
		s.postgres = &group{name: "postgres", procs: map[key]*track{}}
		s.pgLoadgen = &group{name: "postgres-loadgen", procs: map[key]*track{}}
		s.groups = append(s.groups, s.postgres, s.pgLoadgen)
	}

	start := time.Now()
	s.sample(ctx, true)
	if *ready != "" {
		if err := os.WriteFile(*ready, nil, 0o644); err != nil {
			log.Fatal(err)
		}
	}

	// The window ends when the command exits, else on a signal.
	end := make(chan struct{})
	var endOnce sync.Once
	stop := func() { endOnce.Do(func() { close(end) }) }
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	var cmd *exec.Cmd
	var cmdErr error
	if args := flag.Args(); len(args) > 0 {
		signal.Reset(syscall.SIGINT) // Ctrl-C reaches the command, which ends the window
		cmd = exec.Command(args[0], args[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		if err := cmd.Start(); err != nil {
			log.Fatal(err)
		}
		go func() { cmdErr = cmd.Wait(); stop() }()
		go func() {
			for sg := range sig {
				_ = cmd.Process.Signal(sg)
			}
		}()
	} else {
		go func() { <-sig; stop() }()
	}
	tick := time.NewTicker(*interval)
	defer tick.Stop()
loop:
	for {
		select {
		case <-tick.C:
			s.sample(ctx, false)
		case <-end:
			s.sample(ctx, false)
			break loop
		}
	}
	wall := time.Since(start)

	var b strings.Builder
	fmt.Fprintf(&b, "wall %.3f\n", wall.Seconds())
	for _, g := range s.groups {
		fmt.Fprintf(&b, "%s %.3f\n", g.name, g.seconds())
	}
	if cmd != nil && cmd.ProcessState != nil {
		fmt.Fprintf(&b, "loadgen %.3f\n", (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds())
	}
	if *out == "" {
		fmt.Print(b.String())
	} else if err := os.WriteFile(*out, []byte(b.String()), 0o644); err != nil {
		log.Fatal(err)
	}
	if cmd != nil {
		var ee *exec.ExitError
		if errors.As(cmdErr, &ee) {
			os.Exit(ee.ExitCode())
		} else if cmdErr != nil {
			log.Fatal(cmdErr)
		}
	}
}
