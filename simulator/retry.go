package simulator

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"firehose/internal/backoff"
	"firehose/internal/pgretry"
)

// retryPG runs f until it returns nil or an error that is not transient
// (pgretry.Transient), backing off from 100 ms doubling to 2 s (each ±20%:
// internal/backoff); ctx bounds the whole. Each retry is logged once at Info
// (what failed, when the next attempt is), so a verification waiting for its
// database says so.
func retryPG(ctx context.Context, log *slog.Logger, what string, f func() error) error {
	bo := backoff.New(100*time.Millisecond, 2*time.Second)
	for {
		err := f()
		if err == nil || !pgretry.Transient(err) {
			return err
		}
		wait := bo.Next()
		log.Info("verification: PostgreSQL failed transiently; retrying", "what", what, "err", err, "retry_in", wait)
		if !sleep(ctx, wait) {
			return fmt.Errorf("%s: %w (still failing when the verification's time ran out)", what, err)
		}
	}
}
