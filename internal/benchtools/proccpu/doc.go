// Command proccpu measures the CPU time that named processes, and the
// PostgreSQL backends serving one database, spend during a window, from the
// kernel's accounting (utime+stime of /proc/PID/stat, plus cutime+cstime:
// children they reaped, such as Redis's AOF rewrite). The bench scripts use
// it to report CPU per reading for each process.
//
// The window is the life of a command given after --, whose own CPU (the
// load generator's) is taken exactly from its rusage; without a command it
// lasts until SIGTERM or SIGINT.
//
//	proccpu -out cpu.txt -p broker=123 -p redis=$(cat redis.pid) \
//	  -pg postgres://127.0.0.1:5432/postgres -db bench -pg-loadgen-app bench-verify -- firehose simulate ...
//
// It samples every -interval and keeps the last value seen of each process,
// so a process or backend that exits during the window counts up to its
// last sample. A process already running at the first sample counts from
// there; one first seen later (a backend that connected, a worker) counts
// from its start. Backends are those of pg_stat_activity with datname = -db:
// client sessions and autovacuum workers of that database. Backends whose
// application_name is -pg-loadgen-app (the load generator verifying what
// landed) are a group of their own, postgres-loadgen. The cluster's shared
// background processes (walwriter, checkpointer, background writer) are not
// counted: other databases of the cluster use them too.
//
// The output, one "name seconds" line each: wall (the window), every -p
// name, postgres and postgres-loadgen when -db is set, loadgen when a command
// ran. Names are written in the order given.
package main
