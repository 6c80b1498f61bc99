// Package ticketkeys loads the TLS session ticket keys an edge shares with
// the other edges of its deployment (--mqtt-tls-ticket-keys,
// --http-tls-ticket-keys), so that a client resumes its TLS session, an
// abbreviated handshake, on any edge and after a restart.
//
// The file holds one or more 32-byte keys, one a line, in hex or base64;
// the first encrypts new tickets, all of them decrypt. It is re-read when it
// changes (package reload), so keys rotate without a restart.
//
//	k, err := ticketkeys.Load(path, "--mqtt-tls-ticket-keys", logger)
//	k.Apply(tc)                       // tc's tickets use the file's keys
//	go k.Watch(ctx, 2*time.Second)    // re-read the file when it changes
package ticketkeys
