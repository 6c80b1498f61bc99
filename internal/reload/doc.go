// Package reload keeps a parsed configuration file current while the process
// runs: it re-reads the file when it changes and keeps the last good version
// when a new one does not parse. firehose uses it for the HTTP gateway's API
// keys and the MQTT broker's device credentials, so that revoking a key or a
// device takes effect without a restart.
//
//	f, err := reload.Load(path, "API key file", parseKeys, logger)
//	go f.Watch(ctx, 2*time.Second)
//	keys := f.Get() // the current version, never nil after Load
package reload
