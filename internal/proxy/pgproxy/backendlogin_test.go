package pgproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/iamdb/iamdb/internal/testdb"
)

// authPG is a PostgreSQL of this test's own whose pg_hba.conf asks each
// user for a different method, so every branch of backendLogin meets a
// real server.
func authPG(t *testing.T) *testdb.PG {
	t.Helper()
	dir, err := os.MkdirTemp("", "iamdb-hba-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755) // the server may run as another OS user
	hba := filepath.Join(dir, "pg_hba.conf")
	if err := os.WriteFile(hba, []byte(`local all all trust
host all md5user 127.0.0.1/32 md5
host all clearuser 127.0.0.1/32 password
host all all 127.0.0.1/32 scram-sha-256
`), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pg, err := testdb.StartPostgres(ctx, testdb.PGOptions{TLS: true, Settings: map[string]string{"hba_file": hba}})
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL is required (run scripts/deps.sh): %v", err)
		}
		t.Skipf("PostgreSQL not available: %v", err)
	}
	t.Cleanup(func() { pg.Stop() })
	admin, err := pgx.Connect(ctx, pg.AdminDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	for _, stmt := range []string{
		"CREATE USER scramuser PASSWORD 'scram-secret'",
		"SET password_encryption = 'md5'",
		"CREATE USER md5user PASSWORD 'md5-secret'",
		"RESET password_encryption",
		"CREATE USER clearuser PASSWORD 'clear-secret'",
	} {
		if _, err := admin.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	return pg
}

// currentUser runs SELECT current_user on a logged-in connection with the
// simple query protocol.
func currentUser(t *testing.T, bc *backendConn) string {
	t.Helper()
	fe := pgproto3.NewFrontend(bc.conn, bc.conn)
	fe.Send(&pgproto3.Query{String: "SELECT current_user"})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	var user string
	for {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		switch m := msg.(type) {
		case *pgproto3.DataRow:
			user = string(m.Values[0])
		case *pgproto3.ErrorResponse:
			t.Fatalf("query failed: %s", m.Message)
		case *pgproto3.ReadyForQuery:
			return user
		}
	}
}

func TestBackendLogin(t *testing.T) {
	pg := authPG(t)
	tlsCfg, err := pg.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	var d net.Dialer
	cache := newSCRAMCache(16)
	login := func(user, password string, tlsCfg *tls.Config) (*backendConn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		b := &backendLogin{dial: d.DialContext, address: pg.Addr(), tls: tlsCfg, user: user, database: "postgres",
			password: password, params: map[string]string{"application_name": "iamdb-test"}, cache: cache}
		return b.run(ctx)
	}

	for _, tc := range []struct {
		name, user, password string
		tls                  *tls.Config
		auth                 string
	}{
		{"scram over TLS with channel binding", "scramuser", "scram-secret", tlsCfg, "SCRAM-SHA-256-PLUS"},
		{"scram without TLS", "scramuser", "scram-secret", nil, "SCRAM-SHA-256"},
		{"md5", "md5user", "md5-secret", tlsCfg, "md5"},
		{"cleartext", "clearuser", "clear-secret", tlsCfg, "password"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bc, err := login(tc.user, tc.password, tc.tls)
			if err != nil {
				t.Fatal(err)
			}
			defer bc.conn.Close()
			if bc.pid == 0 || len(bc.secretKey) == 0 || bc.txStatus != 'I' || bc.params["application_name"] != "iamdb-test" {
				t.Fatalf("login state: pid %d, key %d bytes, tx %q, params %v", bc.pid, len(bc.secretKey), bc.txStatus, bc.params)
			}
			if bc.auth != tc.auth {
				t.Fatalf("authenticated with %s, want %s", bc.auth, tc.auth)
			}
			if _, isTLS := bc.conn.(*tls.Conn); isTLS != (tc.tls != nil) {
				t.Fatalf("TLS = %v, want %v", isTLS, tc.tls != nil)
			}
			if u := currentUser(t, bc); u != tc.user {
				t.Fatalf("current_user = %q", u)
			}
		})
	}

	t.Run("wrong password is the upstream's refusal", func(t *testing.T) {
		_, err := login("scramuser", "not-the-password", tlsCfg)
		var ue *upstreamAuthError
		if !errors.As(err, &ue) || ue.pg.Code != "28P01" {
			t.Fatalf("err = %v, want the upstream's 28P01", err)
		}
	})

	t.Run("SCRAM keys are derived once per password and salt", func(t *testing.T) {
		n := len(cache.entries)
		for range 3 {
			bc, err := login("scramuser", "scram-secret", tlsCfg)
			if err != nil {
				t.Fatal(err)
			}
			bc.conn.Close()
		}
		if len(cache.entries) != n {
			t.Fatalf("cache grew from %d to %d entries for the same password", n, len(cache.entries))
		}
		// A new password has a new salt: new keys, and the login works.
		admin, err := pgx.Connect(context.Background(), pg.AdminDSN())
		if err != nil {
			t.Fatal(err)
		}
		defer admin.Close(context.Background())
		if _, err := admin.Exec(context.Background(), "ALTER USER scramuser PASSWORD 'rotated'"); err != nil {
			t.Fatal(err)
		}
		bc, err := login("scramuser", "rotated", tlsCfg)
		if err != nil {
			t.Fatalf("login after rotation: %v", err)
		}
		bc.conn.Close()
		if len(cache.entries) != n+1 {
			t.Fatalf("cache has %d entries after a rotation, want %d", len(cache.entries), n+1)
		}
		if _, err := login("scramuser", "scram-secret", tlsCfg); err == nil {
			t.Fatal("the old password still logged in")
		}
	})

	t.Run("unreachable upstream", func(t *testing.T) {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		addr := ln.Addr().String()
		ln.Close()
		b := &backendLogin{dial: d.DialContext, address: addr, user: "scramuser", cache: cache}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := b.run(ctx); err == nil || isUpstreamRefusal(err) {
			t.Fatalf("err = %v, want a dial error", err)
		}
	})
}

// TestSCRAMKeysMatchRFC7677 checks the key derivation against the test
// vector of RFC 7677 section 3 (password "pencil").
func TestSCRAMKeysMatchRFC7677(t *testing.T) {
	sc := &scramConversation{mechanism: "SCRAM-SHA-256", gs2Header: "n,,", clientNonce: "rOprNGfwEbeRWgbNEkqO",
		password: "pencil", cache: newSCRAMCache(1)}
	sc.clientFirstBare = "n=user,r=rOprNGfwEbeRWgbNEkqO"
	final, err := sc.clientFinal([]byte("r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"))
	if err != nil {
		t.Fatal(err)
	}
	want := "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
	if string(final) != want {
		t.Fatalf("client-final\n got %s\nwant %s", final, want)
	}
	if err := sc.verifyServer([]byte("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")); err != nil {
		t.Fatal(err)
	}
	if err := sc.verifyServer([]byte("v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")); err == nil {
		t.Fatal("a wrong server signature was accepted")
	}
}
