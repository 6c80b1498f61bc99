package broker

import mqtt "github.com/mochi-mqtt/server/v2"

// brokerHooks are the hooks New added to mochi, in their order.
func brokerHooks(b *Broker) []mqtt.Hook { return []mqtt.Hook{b.auth, b.ingest, b.bounds} }
