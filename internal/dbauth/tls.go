package dbauth

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"

	"github.com/iamdb/iamdb/internal/config"
)

// UpstreamTLS returns the client TLS configuration iamdb uses towards the
// upstream database, following upstream.tls:
//
//	disable      nil: plain TCP
//	require      encrypted, certificate not verified (libpq sslmode=require)
//	verify-full  certificate verified against upstream.ca, for the host of
//	             upstream.address (libpq sslmode=verify-full)
func UpstreamTLS(u config.Upstream) (*tls.Config, error) {
	switch u.TLS {
	case "", "disable":
		return nil, nil
	case "require":
		// Matches libpq's sslmode=require: protects against passive
		// eavesdropping only. verify-full is the mode to recommend.
		return &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true}, nil //nolint:gosec // sslmode=require semantics, chosen by the operator
	case "verify-full":
		if u.CA == "" {
			return nil, fmt.Errorf("upstream.tls verify-full needs upstream.ca: the CA file that signed %s's certificate", u.Address)
		}
		pem, err := os.ReadFile(u.CA)
		if err != nil {
			return nil, fmt.Errorf("upstream.ca: cannot read CA file %s: %w", u.CA, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("upstream.ca: %s holds no PEM certificate: point it at the CA certificate that signed the upstream's server certificate", u.CA)
		}
		host, _, err := net.SplitHostPort(u.Address)
		if err != nil {
			return nil, fmt.Errorf("upstream.address %q is not host:port: %w", u.Address, err)
		}
		return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: host}, nil
	default:
		return nil, fmt.Errorf("upstream.tls %q: use disable, require or verify-full", u.TLS)
	}
}
