// Package pahostore is eclipse/paho.mqtt.golang's memory store of in-flight
// packets, made safe against the library's resume races.
//
// After a reconnect paho resends what its store holds (resume): it sets the
// DUP flag on each stored PUBLISH, and every write of a packet sets its
// remaining length, while the same packet may still be being written by the
// previous connection's writer (eclipse-paho/paho.mqtt.golang#703; the race
// detector reports it under load with reconnects). This store keeps a
// private copy of each PUBLISH and PUBREL, taken in Put (before paho hands
// the packet to a writer), and Get hands out a fresh copy of it, so no
// packet paho writes is ever touched by another goroutine.
package pahostore
