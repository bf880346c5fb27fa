// Package pki issues the certificates iamdb serves TLS with.
//
// `iamdb init` creates a private certificate authority in the data directory
// and a server certificate signed by it. The CA certificate is also written as
// ca-bundle.pem, the analogue of Amazon's rds-ca-bundle.pem: clients pin it
// (psql sslrootcert=…, mysql --ssl-ca=…) to connect with full verification.
//
// Files (all PEM; keys are written with mode 0600):
//
//	ca.pem, ca.key         the authority (ECDSA P-256, 10 years)
//	ca-bundle.pem          copy of ca.pem for clients
//	server.pem, server.key a leaf for localhost, 127.0.0.1, ::1 and every host
//	                       named in instance endpoints (EnsureServerCert adds
//	                       missing names by re-issuing)
package pki
