// Package pgretry tells which PostgreSQL errors may go away by themselves,
// for the checkers (the simulator's verification, the tests' queries) that
// retry them rather than fail.
package pgretry
