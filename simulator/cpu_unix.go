//go:build unix

package simulator

import (
	"syscall"
	"time"
)

// processCPU is the CPU time this process used so far (user + system), or 0
// when it cannot be read.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
