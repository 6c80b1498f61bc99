package main

import (
	"context"
	"errors"
	"io"
)

// runSimulate runs the fleet simulator (firehose simulate); see simulator/.
func runSimulate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("simulate: not built yet")
}
