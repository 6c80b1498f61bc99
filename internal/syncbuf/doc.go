// Package syncbuf is a bytes.Buffer that concurrent writers may share: the
// output of a child process (exec.Cmd copies stdout and stderr from
// goroutines of its own) or of a logger, read by the test that owns it.
package syncbuf
