package ingest

import "flag"

// RegisterFlags registers the validation limits on fs.
func (l *Limits) RegisterFlags(fs *flag.FlagSet) {
	fs.IntVar(&l.MaxDeviceID, "max-device-id-bytes", DefaultLimits.MaxDeviceID, "longest device id accepted, in bytes")
	fs.IntVar(&l.MaxPayload, "max-payload-bytes", DefaultLimits.MaxPayload, "largest extra-fields JSON of one reading, in bytes")
	fs.DurationVar(&l.MaxAge, "max-reading-age", DefaultLimits.MaxAge, "oldest measured time accepted, before the time of receipt; with a --retention, at most the retention minus one\npartition interval (the default becomes that bound; a larger value given is refused at start)")
	fs.DurationVar(&l.MaxSkew, "max-clock-skew", DefaultLimits.MaxSkew, "latest measured time accepted, after the time of receipt (device clocks run fast)")
}
