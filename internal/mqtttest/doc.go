// Package mqtttest connects the MQTT clients no one here wrote (eclipse
// paho.mqtt.golang for 3.1.1, eclipse/paho.golang for 5) to a broker under
// test, with settings tests need: no automatic reconnection, bounded waits,
// disconnection when the test ends.
package mqtttest
