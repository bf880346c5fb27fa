package dbauth

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/go-sql-driver/mysql"
)

func TestNativePasswordHash(t *testing.T) {
	// MySQL's and MariaDB's documented value of PASSWORD('password'); the
	// integration tests compare against the server's PASSWORD() as well.
	if got := nativePasswordHash("password"); got != "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19" {
		t.Fatalf("nativePasswordHash = %s", got)
	}
}

func TestQuoteMySQLString(t *testing.T) {
	for in, want := range map[string]string{"app": "'app'", "o'brien": "'o''brien'", "10.0.0.%": "'10.0.0.%'"} {
		if got, err := quoteMySQLString(in); err != nil || got != want {
			t.Errorf("quoteMySQLString(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{`a\b`, "a\x00b"} {
		if _, err := quoteMySQLString(bad); err == nil {
			t.Errorf("quoteMySQLString(%q) accepted", bad)
		}
	}
	if n := len(mysqlRotationLockName(strings.Repeat("x", 200))); n > 64 {
		t.Fatalf("lock name of %d characters; the server allows 64", n)
	}
}

func TestScrubMySQL(t *testing.T) {
	const secret = "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"
	myErr := &mysql.MySQLError{Number: 1064, Message: "You have an error in your SQL syntax near '" + secret + "' at line 1"}
	got := scrubMySQL(myErr, secret)
	var me *mysql.MySQLError
	if !errors.As(got, &me) || me.Number != 1064 || strings.Contains(got.Error(), secret) {
		t.Fatalf("scrubbed MySQLError = %v", got)
	}
	wrapped := fmt.Errorf("exec %s: %w", secret, myErr)
	got = scrubMySQL(wrapped, secret)
	if !errors.As(got, &me) || me.Number != 1064 || strings.Contains(got.Error(), secret) || !strings.Contains(got.Error(), "[REDACTED]") {
		t.Fatalf("scrubbed wrapped error = %v", got)
	}
	plain := errors.New("connection refused")
	if scrubMySQL(plain, secret) != plain {
		t.Fatal("an error without secrets was rewrapped")
	}
}
