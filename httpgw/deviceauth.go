package httpgw

import (
	"errors"
	"fmt"
	"net/http"

	"firehose/ingest"
	"firehose/internal/devsecret"
)

// Per-device identity over HTTP (--http-device-auth mqtt): a request to
// /v1/readings or /readings/fast names its device with HTTP Basic auth —
// username the device id, password its device secret — checked against the
// credentials the MQTT broker uses (--mqtt-auth: the file or the device
// registry), and may carry only that device's readings.
//
// Each request is checked against the credentials in use at that moment:
// nothing is remembered between requests, so a device removed, disabled or
// rotated is refused from its next request on. The check is one map lookup
// and one HMAC-SHA256 (devsecret.Check, about 2 µs). A bcrypt password is
// refused: checking it would cost tens of milliseconds of CPU per request.

// DeviceAuthMQTT as --http-device-auth identifies each device by the device
// credentials of --mqtt-auth.
const DeviceAuthMQTT = "mqtt"

// basicChallenge is the WWW-Authenticate of a refused device credential.
const basicChallenge = `Basic realm="firehose"`

// Device is what the gateway needs of a device's credential.
type Device struct {
	// Hash is the stored hash of the device's password: only a device
	// secret's (fh1$..., see package devsecret) is taken over HTTP.
	Hash []byte
}

// Devices gives the gateway the device credentials for --http-device-auth:
// the command adapts the broker's credential source (the credentials file
// or the device registry) to it, the one instance the broker uses too.
type Devices interface {
	// Device returns the credential of device id; ok is false when there is
	// none (unknown, removed or disabled). Its error is
	// ErrDevicesNotLoaded when no version of the credentials was ever
	// loaded. It is called on every request: it must not block (an atomic
	// load and a map lookup).
	Device(id string) (d Device, ok bool, err error)
}

// ErrDevicesNotLoaded is the error of Devices.Device before the credentials
// were first loaded (the registry's PostgreSQL did not answer yet): the
// request is answered 503 with Retry-After.
var ErrDevicesNotLoaded = errors.New("device credentials not loaded yet")

// Refusals of device credentials.
var (
	errNoDevice = withChallenge(refusal(http.StatusUnauthorized, reasonUnauthorized,
		"device credentials required: HTTP Basic auth with the device id as username and its device secret as password"))
	errBadDevice = withChallenge(refusal(http.StatusUnauthorized, reasonUnauthorized,
		"unknown device or wrong device secret"))
	errDevicesNotLoaded = func() *apiError {
		ae := refusal(http.StatusServiceUnavailable, reasonUnavailable, "device credentials not loaded yet: retry")
		ae.retry = true
		return ae
	}()
)

func withChallenge(ae *apiError) *apiError {
	ae.challenge = basicChallenge
	return ae
}

// authDevice returns the device req authenticates as by HTTP Basic auth
// under --http-device-auth, or "" when the gateway does not ask for it.
// Errors are the 401 (503 before the credentials loaded) answers.
func (s *Server) authDevice(req *http.Request) (string, error) {
	if s.devices == nil {
		return "", nil
	}
	id, secret, ok := req.BasicAuth()
	if !ok || id == "" {
		return "", errNoDevice
	}
	d, known, err := s.devices.Device(id)
	switch {
	case err != nil:
		s.log.Debug("request refused: device credentials unavailable", "err", err, "device_id", id)
		return "", errDevicesNotLoaded
	case !known:
		return "", errBadDevice
	case !devsecret.IsHash(d.Hash):
		return "", withChallenge(refusal(http.StatusUnauthorized, reasonUnauthorized, fmt.Sprintf(
			"device %q has a bcrypt password, which the HTTP gateway does not check (tens of milliseconds of CPU per request): "+
				"give it a device secret (firehose devices rotate, or a line from firehose devices add in the credentials file)", id)))
	case !devsecret.Check(d.Hash, []byte(secret)):
		return "", errBadDevice
	}
	return id, nil
}

// deviceAllows refuses readings of a device other than device, the one the
// request authenticated as ("": no device authentication, anything goes).
func deviceAllows(device string, rs []ingest.Reading) error {
	if device == "" {
		return nil
	}
	for i := range rs {
		if rs[i].DeviceID != device {
			return deviceForbidden(device, rs[i].DeviceID)
		}
	}
	return nil
}

// deviceForbidden is the 403 answer to a device posting another device's
// readings. A write= grant does not change it: as over MQTT, a grant never
// makes readings of another device.
func deviceForbidden(auth, device string) *apiError {
	extra := appendJSONString([]byte(`,"device_id":`), device)
	return refusal(http.StatusForbidden, reasonForbidden,
		fmt.Sprintf("device %q may post only its own readings, not device %q's", auth, device), extra...)
}
