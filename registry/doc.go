// Package registry is the device registry in PostgreSQL: it loads the
// firehose_devices table into the broker's credentials, watches it for
// changes (LISTEN firehose_devices), and changes it (firehose devices).
//
// A broker started with --mqtt-auth postgres reads its credentials from a
// Source, which loads the whole registry at start, applies each change
// within a second, keeps what it loaded while PostgreSQL is down, and reads
// it all again once it is back:
//
//	src, _ := registry.Open(pgURL, logger)
//	_ = src.Load(ctx) // PostgreSQL down: the broker answers 0x88 until Watch loads it
//	cfg.Credentials = src
//	b, _ := broker.New(cfg, producer, logger, reg) // b.Run calls src.Watch
//
// Devices are added with a random secret, printed once and stored only as
// its hash:
//
//	secret, err := registry.Add(ctx, db, "pump-7", registry.Grants{})
package registry
