// Package testcert makes throwaway self-signed TLS certificates for tests of
// the listeners that serve TLS (the HTTP gateway, the broker).
//
//	certFile, keyFile, pool := testcert.SelfSigned(t)
//	// serve with certFile and keyFile; clients trust pool
package testcert
