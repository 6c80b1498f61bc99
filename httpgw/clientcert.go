package httpgw

import (
	"errors"
	"fmt"
	"net/http"

	"firehose/ingest"
	"firehose/internal/clientcert"
)

// Client certificates (--http-tls-client-ca): a certificate a client
// presents must be one of the operator's CA (clientcert checks the chain,
// the clientAuth usage and the CRL at the handshake), but the handshake
// does not demand one, so that probes and scrapers reach /livez, /readyz
// and /metrics without it. A request to the readings endpoints needs one
// (or, under --http-device-auth too, a device secret instead), is checked
// again against the CRL in use (a keep-alive connection outlives a
// revocation) and may carry only the readings of the device its
// certificate names.

// errNoCertificate answers a readings request without a client
// certificate where one is required.
var errNoCertificate = refusal(http.StatusUnauthorized, reasonUnauthorized, "a client certificate is required (--http-tls-client-ca)")

// certDevice returns the device req's client certificate names, or "" when
// the gateway takes no client certificates, or when the request has none
// and may identify its device by a secret instead (--http-device-auth). A
// certificate revoked since its connection began is a 403, and the
// connection is closed.
func (s *Server) certDevice(req *http.Request) (string, error) {
	if s.certs == nil {
		return "", nil
	}
	if req.TLS == nil || len(req.TLS.PeerCertificates) == 0 {
		if s.devices != nil {
			return "", nil
		}
		return "", errNoCertificate
	}
	id, err := s.certs.Device(*req.TLS)
	switch {
	case err == nil:
		return id, nil
	case errors.Is(err, clientcert.ErrRevoked):
		s.log.Debug("request refused: client certificate revoked", "err", err, "remote", req.RemoteAddr)
		ae := refusal(http.StatusForbidden, reasonForbidden, "client certificate revoked")
		ae.close = true
		return "", ae
	}
	return "", refusal(http.StatusForbidden, reasonForbidden, err.Error())
}

// certAllows refuses readings of a device other than device, the one the
// request's certificate names ("": no certificate, anything goes).
func certAllows(device string, rs []ingest.Reading) error {
	if device == "" {
		return nil
	}
	for i := range rs {
		if rs[i].DeviceID != device {
			return certForbidden(device, rs[i].DeviceID)
		}
	}
	return nil
}

// certForbidden is the 403 answer to a certificate posting another device's
// readings.
func certForbidden(cert, device string) *apiError {
	extra := appendJSONString([]byte(`,"device_id":`), device)
	return refusal(http.StatusForbidden, reasonForbidden,
		fmt.Sprintf("the client certificate of device %q may not post readings of device %q", cert, device), extra...)
}
