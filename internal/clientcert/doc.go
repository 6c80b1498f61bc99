// Package clientcert makes a TLS client certificate a device identity: it
// requires and verifies client certificates issued by a CA of the operator's
// (with the clientAuth extended key usage), names the device a certificate is
// for (its subject CN, or a SAN URI or DNS name), and keeps a certificate
// revocation list current, refusing revoked serials at the handshake, which
// Go's crypto/tls does not do by itself.
//
//	v, err := clientcert.New(clientcert.Config{CAFile: "ca.pem", CRLFile: "ca.crl", Flag: "--mqtt-tls"}, logger)
//	v.Apply(tlsConfig)                              // every handshake needs a good certificate
//	go v.Watch(ctx, 2*time.Second, cutRevoked)      // re-read the CRL when it changes
//	id, err := v.Device(conn.ConnectionState())     // the device; ErrRevoked once the CRL lists it
package clientcert
