package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// File names inside the data directory.
const (
	CAFile         = "ca.pem"
	CAKeyFile      = "ca.key"
	BundleFile     = "ca-bundle.pem"
	ServerCertFile = "server.pem"
	ServerKeyFile  = "server.key"
)

// DefaultHosts are always in the server certificate.
var DefaultHosts = []string{"localhost", "127.0.0.1", "::1"}

const (
	caLifetime     = 10 * 365 * 24 * time.Hour
	serverLifetime = 2 * 365 * 24 * time.Hour
	// renewBefore re-issues a server certificate this long before it expires.
	renewBefore = 30 * 24 * time.Hour
)

// CA is a loaded certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	PEM  []byte
}

// CreateCA writes a new authority and its client bundle into dir. It refuses
// to replace an existing one: every client that pinned it would break.
func CreateCA(dir, commonName string, now time.Time) (*CA, error) {
	if _, err := os.Stat(filepath.Join(dir, CAKeyFile)); err == nil {
		return nil, fmt.Errorf("a CA already exists in %s: keep it (clients trust it) or remove %s and %s first", dir, CAFile, CAKeyFile)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"iamdb"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("self-signing CA: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(dir, CAKeyFile), keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(dir, CAFile), certPEM, 0o644); err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(dir, BundleFile), certPEM, 0o644); err != nil {
		return nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	return &CA{Cert: cert, Key: key, PEM: certPEM}, nil
}

// LoadCA reads the authority from dir.
func LoadCA(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, fmt.Errorf("reading CA certificate (run 'iamdb init' to create the data directory): %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("reading CA key: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate and key in %s do not form a pair: %w", dir, err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("CA key in %s is not an ECDSA key", dir)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("parsing CA certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key, PEM: certPEM}, nil
}

// EnsureServerCert makes sure dir holds a server certificate signed by ca
// that covers DefaultHosts plus hosts and is not close to expiry, issuing a
// new one when needed. It reports whether it issued one.
func EnsureServerCert(dir string, ca *CA, hosts []string, now time.Time) (bool, error) {
	want := Hosts(hosts)
	certPath := filepath.Join(dir, ServerCertFile)
	if pair, err := tls.LoadX509KeyPair(certPath, filepath.Join(dir, ServerKeyFile)); err == nil {
		if leaf, err := x509.ParseCertificate(pair.Certificate[0]); err == nil && covers(leaf, want) &&
			now.Add(renewBefore).Before(leaf.NotAfter) && leaf.CheckSignatureFrom(ca.Cert) == nil {
			return false, nil
		}
	}
	// Missing, unreadable, mismatched, expiring or too narrow: issue anew.
	certPEM, keyPEM, err := ca.Issue(want, now)
	if err != nil {
		return false, err
	}
	if err := writeFile(filepath.Join(dir, ServerKeyFile), keyPEM, 0o600); err != nil {
		return false, err
	}
	if err := writeFile(certPath, certPEM, 0o644); err != nil {
		return false, err
	}
	return true, nil
}

// Hosts returns DefaultHosts plus extra, without duplicates, in a stable order.
func Hosts(extra []string) []string {
	out := slices.Clone(DefaultHosts)
	for _, h := range extra {
		if h != "" && !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	return out
}

// Issue signs a server certificate for hosts (names and IP addresses). The
// certificate PEM includes the CA so servers present the whole chain.
func (ca *CA) Issue(hosts []string, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating server key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: hosts[0], Organization: []string{"iamdb"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(serverLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("signing server certificate: %w", err)
	}
	var buf bytes.Buffer
	_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	buf.Write(ca.PEM)
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return buf.Bytes(), keyPEM, nil
}

func covers(leaf *x509.Certificate, hosts []string) bool {
	for _, h := range hosts {
		if leaf.VerifyHostname(h) != nil {
			return false
		}
	}
	return true
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	return n
}

// writeFile replaces path atomically so a crash never leaves half a key.
func writeFile(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
