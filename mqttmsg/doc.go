// Package mqttmsg turns an MQTT message — its topic, payload and msg_id —
// into readings as firehose's MQTT edges read it: the readings topic, the
// mapping rules and Sparkplug B.
//
// It is the one copy of that conversion: the embedded broker (package
// broker, on mochi-mqtt) and the subscriber (firehose as a client of another
// broker) call it for every message, and Resolver for `firehose rejected
// replay`. What is about a connection (who may publish what, the MQTT
// answers, each connection's Sparkplug B sessions, sending Rebirth requests)
// stays with the caller. Reading a message is two steps, so that a caller
// can check its client between them: Route looks at the topic name alone;
// Read decodes the payload and, for Sparkplug B, changes the edge node's
// state.
//
//	rd, err := mqttmsg.New(mqttmsg.Config{Topic: mqttmsg.DefaultTopic, Limits: lim})
//	if err != nil { ... } // a bad --mqtt-topic
//	rt := rd.Route(topic)
//	if rt.Kind == mqttmsg.Pass { ... } // not a topic firehose stores
//	res, err := rd.Read(ctx, rt, mqttmsg.Message{Topic: topic, Payload: payload, QoS: 1, ReceivedAt: time.Now()})
//	switch {
//	case errors.Is(err, mqttmsg.ErrStateUnavailable): // transient: do not acknowledge
//	case errors.Is(err, sparkplug.ErrQuota), errors.Is(err, sparkplug.ErrStateTooLarge): // over the Sparkplug state bounds
//	case err != nil: // the message is invalid: refuse it, or keep it as an edge dead letter
//	case res.Unresolved != nil: // keep the whole message as an edge dead letter of rt.Kind, device rt.Device()
//	default: // store res.Readings
//	}
//	if res.Rebirth != nil { ... } // send sparkplug.RebirthRequest(res.Rebirth.Group, res.Rebirth.EdgeNode, now)
package mqttmsg
