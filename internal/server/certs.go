package server

import (
	"crypto/tls"
	"fmt"
	"net"
	"sync/atomic"
)

// certificate is a server certificate read from a PEM pair on disk and
// replaceable at run time: listeners hold a tls.Config whose GetCertificate
// reads the current pair, so a reload needs no new listener.
type certificate struct {
	certFile, keyFile string
	pair              atomic.Pointer[tls.Certificate]
}

func newCertificate(certFile, keyFile string) (*certificate, error) {
	c := &certificate{certFile: certFile, keyFile: keyFile}
	if err := c.load(); err != nil {
		return nil, err
	}
	return c, nil
}

// load reads the pair again. On error the pair in use stays.
func (c *certificate) load() error {
	pair, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("loading server certificate %s with key %s: %w", c.certFile, c.keyFile, err)
	}
	c.pair.Store(&pair)
	return nil
}

func (c *certificate) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.pair.Load(), nil
}

// tlsConfig is the server side of a listener. TLS 1.2 is the floor the
// product promises (proxy.md).
func (c *certificate) tlsConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: c.get}
}

// endpointHosts returns the host part of every endpoint, which the
// certificate must name for clients that verify it (sslmode=verify-full).
func endpointHosts(endpoints []string) []string {
	var hosts []string
	for _, ep := range endpoints {
		host, _, err := net.SplitHostPort(ep)
		if err != nil || host == "" {
			continue
		}
		hosts = append(hosts, host)
	}
	return hosts
}
