package partition

import (
	"context"
	"errors"
)

// RunBeside runs run (the bridge) beside the maintenance of the partitions
// (readings' and Config.Tables') until run returns. The first pass runs before run starts, so
// that rows land in their partition rather than the default one; a failed
// pass only delays that (the default partition takes every row meanwhile)
// and is logged, but ErrIntervalMismatch is returned without running run.
func (m *Maintainer) RunBeside(ctx context.Context, run func(context.Context) error) error {
	if err := m.Maintain(ctx); err != nil {
		if errors.Is(err, ErrIntervalMismatch) {
			return err
		}
		m.log.Warn("partition maintenance failed; the bridge starts, rows without a partition go to readings_default", "err", err)
	}
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.Run(pctx)
	}()
	defer func() {
		cancel()
		<-done
	}()
	return run(ctx)
}
