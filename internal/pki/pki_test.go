package pki

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestCAAndServerCertificate(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	ca, err := CreateCA(dir, "iamdb test CA", now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CreateCA(dir, "again", now); err == nil {
		t.Fatal("CreateCA replaced an existing CA")
	}
	for _, f := range []string{CAKeyFile} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v, err %v; want 0600", f, st.Mode().Perm(), err)
		}
	}
	issued, err := EnsureServerCert(dir, ca, []string{"db.example.com", "10.1.2.3"}, now)
	if err != nil || !issued {
		t.Fatalf("first EnsureServerCert: issued=%v err=%v", issued, err)
	}
	issued, err = EnsureServerCert(dir, ca, []string{"db.example.com"}, now)
	if err != nil || issued {
		t.Fatalf("covered hosts must not re-issue: issued=%v err=%v", issued, err)
	}
	issued, err = EnsureServerCert(dir, ca, []string{"other.example.com"}, now)
	if err != nil || !issued {
		t.Fatalf("a new host must re-issue: issued=%v err=%v", issued, err)
	}

	// A client that pins ca-bundle.pem verifies the server for each host.
	bundle, err := os.ReadFile(filepath.Join(dir, BundleFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(bundle) {
		t.Fatal("bundle holds no certificate")
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, ServerCertFile), filepath.Join(dir, ServerKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	for _, h := range []string{"localhost", "127.0.0.1", "::1", "other.example.com"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: h, Roots: pool}); err != nil {
			t.Errorf("verify for %s: %v", h, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "evil.example.com", Roots: pool}); err == nil {
		t.Error("certificate verified for a host it was not issued for")
	}

	issued, err = EnsureServerCert(dir, ca, nil, now.Add(serverLifetime-time.Hour))
	if err != nil || !issued {
		t.Fatalf("a certificate near expiry must be renewed: issued=%v err=%v", issued, err)
	}

	loaded, err := LoadCA(dir)
	if err != nil || !loaded.Cert.Equal(ca.Cert) {
		t.Fatalf("LoadCA: %v", err)
	}
}
