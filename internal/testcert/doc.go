// Package testcert makes throwaway TLS certificates for tests of the
// listeners that serve TLS (the HTTP gateway, the broker): a self-signed
// server certificate, or a whole certificate authority made with the
// openssl command line (device certificates, revocations, a CRL).
//
//	certFile, keyFile, pool := testcert.SelfSigned(t)
//	// serve with certFile and keyFile; clients trust pool
//
//	pki := testcert.NewPKI(t)
//	cert, key := pki.Device("pump-7", testcert.DeviceOptions{})
//	pki.Revoke(cert) // rewrites pki.CRL
package testcert
