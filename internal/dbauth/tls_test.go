package dbauth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/iamdb/iamdb/internal/config"
	"github.com/iamdb/iamdb/internal/dbauth"
	"github.com/iamdb/iamdb/internal/testdb"
)

// connectWith logs in as the superuser with the TLS configuration under test
// and reports whether the session is encrypted.
func connectWith(t *testing.T, pg *testdb.PG, u config.Upstream) (bool, error) {
	t.Helper()
	tlsCfg, err := dbauth.UpstreamTLS(u)
	if err != nil {
		t.Fatalf("UpstreamTLS(%s): %v", u.TLS, err)
	}
	cfg, err := pgconn.ParseConfig(pg.DSN(pg.Superuser, pg.Password, "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.TLSConfig, cfg.Fallbacks = tlsCfg, nil
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return false, err
	}
	defer conn.Close(ctx)
	res := conn.ExecParams(ctx, `SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()`, nil, nil, nil, nil).Read()
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	return string(res.Rows[0][0]) == "true", nil
}

func otherCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "not the upstream's CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestUpstreamTLSAgainstServer(t *testing.T) {
	pg := upstream(t)
	addr := pg.Addr()

	ssl, err := connectWith(t, pg, config.Upstream{Address: addr, TLS: "verify-full", CA: pg.CAFile})
	if err != nil || !ssl {
		t.Fatalf("verify-full with the right CA: ssl=%v, %v", ssl, err)
	}
	if _, err := connectWith(t, pg, config.Upstream{Address: addr, TLS: "verify-full", CA: otherCA(t)}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("verify-full with a wrong CA: %v, want a certificate error", err)
	}
	ssl, err = connectWith(t, pg, config.Upstream{Address: addr, TLS: "require"})
	if err != nil || !ssl {
		t.Fatalf("require without a CA: ssl=%v, %v", ssl, err)
	}
	ssl, err = connectWith(t, pg, config.Upstream{Address: addr, TLS: "disable"})
	if err != nil || ssl {
		t.Fatalf("disable: ssl=%v, %v; want a plain connection", ssl, err)
	}

	// The host of the address is what gets verified: the certificate is
	// for 127.0.0.1/localhost, not for another name.
	cfg, err := dbauth.UpstreamTLS(config.Upstream{Address: "db.example.com:5432", TLS: "verify-full", CA: pg.CAFile})
	if err != nil || cfg.ServerName != "db.example.com" || cfg.RootCAs == nil || cfg.InsecureSkipVerify {
		t.Fatalf("verify-full config = %+v, %v", cfg, err)
	}
}

func TestUpstreamTLSErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.pem")
	if _, err := dbauth.UpstreamTLS(config.Upstream{Address: "h:1", TLS: "verify-full", CA: missing}); err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("unreadable CA: %v, want the file named", err)
	}
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(notPEM, []byte("hello"), 0o644)
	if _, err := dbauth.UpstreamTLS(config.Upstream{Address: "h:1", TLS: "verify-full", CA: notPEM}); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("CA file without certificates: %v", err)
	}
	if _, err := dbauth.UpstreamTLS(config.Upstream{Address: "h:1", TLS: "verify-full"}); err == nil {
		t.Fatal("verify-full without a CA accepted")
	}
	if _, err := dbauth.UpstreamTLS(config.Upstream{Address: "h:1", TLS: "prefer"}); err == nil {
		t.Fatal("unknown mode accepted")
	}
	if cfg, err := dbauth.UpstreamTLS(config.Upstream{Address: "h:1", TLS: "disable"}); cfg != nil || err != nil {
		t.Fatalf("disable = %v, %v; want nil, nil", cfg, err)
	}
}
