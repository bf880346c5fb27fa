package testdb

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
)

// fakeBin creates an executable file.
func fakeBin(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestFindPGBinDir(t *testing.T) {
	root := t.TempDir()
	for _, v := range []string{"9.6", "15", "16"} {
		fakeBin(t, filepath.Join(root, "lib", v, "bin", "initdb"))
		fakeBin(t, filepath.Join(root, "lib", v, "bin", "postgres"))
	}
	// A newer but incomplete installation (client only) must be ignored.
	fakeBin(t, filepath.Join(root, "lib", "17", "bin", "initdb"))

	// PATH entry with a symlink to version 15, as /usr/local/bin may have.
	linkDir := filepath.Join(root, "links")
	if err := os.Mkdir(linkDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(root, "lib", "15", "bin", "postgres"), filepath.Join(linkDir, "postgres")); err != nil {
		t.Fatal(err)
	}
	// PATH entry with postgres but no initdb anywhere near it.
	lonely := filepath.Join(root, "lonely")
	fakeBin(t, filepath.Join(lonely, "postgres"))

	globs := []string{filepath.Join(root, "lib", "*", "bin")}
	tests := []struct {
		name string
		path []string
		want string
	}{
		{"not on PATH: highest complete version", nil, filepath.Join(root, "lib", "16", "bin")},
		{"PATH symlink wins and is resolved", []string{lonely, linkDir}, filepath.Join(root, "lib", "15", "bin")},
		{"incomplete PATH entry falls back to globs", []string{lonely}, filepath.Join(root, "lib", "16", "bin")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := findPGBinDir(tc.path, globs)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}

	_, err := findPGBinDir([]string{lonely}, []string{filepath.Join(root, "nowhere", "*")})
	if !errors.Is(err, ErrNotInstalled) {
		t.Errorf("nothing installed: err = %v, want ErrNotInstalled", err)
	}
}

func TestVersionLess(t *testing.T) {
	ordered := []string{
		"/tmp/build123/usr/lib/postgresql/9.6/bin", // digits elsewhere in the path do not count
		"/usr/lib/postgresql/10/bin",
		"/usr/pgsql-15/bin",
		"/usr/lib/postgresql/16/bin",
	}
	for i := range ordered {
		for j := range ordered {
			if got, want := versionLess(ordered[i], ordered[j]), i < j; got != want {
				t.Errorf("versionLess(%s, %s) = %v, want %v", ordered[i], ordered[j], got, want)
			}
		}
	}
}

func TestUniqueName(t *testing.T) {
	long := "TestSomething/with spaces and ÜNICODE/" + strings.Repeat("x", 100)
	seen := map[string]bool{}
	for range 3 {
		n := uniqueName(long)
		if len(n) > 63 {
			t.Errorf("%q is %d bytes, over PostgreSQL's 63", n, len(n))
		}
		if strings.Trim(n, "abcdefghijklmnopqrstuvwxyz0123456789_") != "" {
			t.Errorf("%q has characters that need quoting", n)
		}
		if seen[n] {
			t.Errorf("%q returned twice", n)
		}
		seen[n] = true
	}
	if n := uniqueName("TestFoo/bar"); !strings.HasPrefix(n, "t_testfoo_bar_") {
		t.Errorf("uniqueName(TestFoo/bar) = %q; want the test name kept readable", n)
	}
}

func TestDSNEscapesCredentials(t *testing.T) {
	const user, pass, db = "al ice", "p@ss:/w?rd#%", "my db"
	pg := &PG{Host: "127.0.0.1", Port: 5433}
	cfg, err := pgx.ParseConfig(pg.DSN(user, pass, db))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.User != user || cfg.Password != pass || cfg.Database != db || cfg.Host != "127.0.0.1" || cfg.Port != 5433 || cfg.TLSConfig != nil {
		t.Errorf("PG DSN round trip: user %q pass %q db %q host %s port %d tls %v",
			cfg.User, cfg.Password, cfg.Database, cfg.Host, cfg.Port, cfg.TLSConfig != nil)
	}

	m := &MariaDBServer{Host: "127.0.0.1", Port: 3307}
	dsn := m.DSN("bob", "p@ss:/w?rd", "app")
	if want := "bob:p@ss:/w?rd@tcp(127.0.0.1:3307)/app"; dsn != want {
		t.Errorf("MariaDB DSN = %q, want %q", dsn, want)
	}
	mc, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	if mc.User != "bob" || mc.Passwd != "p@ss:/w?rd" || mc.DBName != "app" || mc.Addr != "127.0.0.1:3307" {
		t.Errorf("MariaDB DSN round trip: %+v", mc)
	}
}

func TestQuoteString(t *testing.T) {
	for in, want := range map[string]string{
		"plain":   `'plain'`,
		`it's`:    `'it\'s'`,
		`back\sl`: `'back\\sl'`,
	} {
		if got := quoteString(in); got != want {
			t.Errorf("quoteString(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestWriteServerCerts(t *testing.T) {
	dir := t.TempDir()
	files, err := writeServerCerts(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.LoadX509KeyPair(files.Cert, files.Key); err != nil {
		t.Fatalf("certificate and key do not match: %v", err)
	}
	fi, err := os.Stat(files.Key)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v; PostgreSQL refuses keys readable by others", fi.Mode().Perm())
	}

	cfg, err := clientTLSConfig(files.CA)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(files.Cert)
	block, _ := pem.Decode(raw)
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"127.0.0.1", "::1", "localhost"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: cfg.RootCAs, DNSName: host}); err != nil {
			t.Errorf("certificate does not verify for %s: %v", host, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: cfg.RootCAs, DNSName: "example.com"}); err == nil {
		t.Error("certificate verifies for example.com; hostname checking would be meaningless")
	}
	other, err := writeServerCerts(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	otherCfg, err := clientTLSConfig(other.CA)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: otherCfg.RootCAs, DNSName: "127.0.0.1"}); err == nil {
		t.Error("certificate verifies against another server's CA")
	}
}

func TestLogTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "server.log")
	var b strings.Builder
	b.WriteString("OLD RUN\n")
	from := int64(b.Len())
	for i := range 2000 {
		fmt.Fprintf(&b, "line %d\n", i)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	tail := logTail(path, from)
	if !strings.HasSuffix(tail, "line 1999") {
		t.Errorf("tail does not end with the last line: ...%q", tail[max(0, len(tail)-40):])
	}
	if strings.Contains(tail, "OLD RUN") || strings.Contains(tail, "line 0\n") {
		t.Error("tail includes output from before the offset or the whole file")
	}
	if len(tail) > 4200 {
		t.Errorf("tail is %d bytes; error messages should stay short", len(tail))
	}
	if got := logTail(path, int64(b.Len())); !strings.Contains(got, "empty") {
		t.Errorf("nothing new since offset: got %q", got)
	}
}

func TestAddrInUse(t *testing.T) {
	for _, log := range []string{
		`LOG:  could not bind IPv4 address "127.0.0.1": Address already in use`,
		`[ERROR] Can't start server: Bind on TCP/IP port. Got error: 98: Address already in use`,
		`# Warning: Could not create server TCP listening socket 127.0.0.1:6380: bind: Address already in use`,
	} {
		if !addrInUse(log) {
			t.Errorf("not recognised as a port clash: %s", log)
		}
	}
	if addrInUse("FATAL:  data directory has invalid permissions") {
		t.Error("unrelated failure taken for a port clash")
	}
}

func TestSweepStale(t *testing.T) {
	parent := t.TempDir()
	// A pid that is certainly dead: a child we started and reaped.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	deadPID := cmd.Process.Pid

	mk := func(name, owner string) string {
		d := filepath.Join(parent, name)
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if owner != "" {
			if err := os.WriteFile(filepath.Join(d, ownerFile), []byte(owner), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return d
	}
	stale := mk(dirPrefix+"pg-dead", strconv.Itoa(deadPID))
	mine := mk(dirPrefix+"pg-mine", strconv.Itoa(os.Getpid()))
	alive := mk(dirPrefix+"pg-alive", strconv.Itoa(os.Getppid()))
	young := mk(dirPrefix+"pg-being-created", "")
	unrelated := mk("someone-else", strconv.Itoa(deadPID))

	sweepStale(parent)

	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("directory of dead process %d not removed", deadPID)
	}
	for _, d := range []string{mine, alive, young, unrelated} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s removed but must stay: %v", filepath.Base(d), err)
		}
	}
}

func TestTraversable(t *testing.T) {
	other := &account{name: "nobody-test", uid: 65530, gid: 65530}
	dir := t.TempDir()
	open := filepath.Join(dir, "open")
	closed := filepath.Join(dir, "closed")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(closed, 0o700); err != nil {
		t.Fatal(err)
	}
	// t.TempDir's parent is private to us; open it like /tmp would be.
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if !traversable(open, other) {
		// Some parent of the test temp dir may itself be private.
		if !traversable(filepath.Dir(filepath.Dir(dir)), other) {
			t.Skipf("TMPDIR %s is not traversable by others on this machine", filepath.Dir(filepath.Dir(dir)))
		}
		t.Errorf("%s (0755) reported not traversable", open)
	}
	if traversable(filepath.Join(closed, "x"), other) {
		t.Errorf("path under a 0700 directory of another user reported traversable")
	}
	if p := tempParent(other); !traversable(p, other) {
		t.Errorf("tempParent chose %s, which the service account cannot reach", p)
	}
}

// fakeTB records how unavailable ends a test, without ending this one.
type fakeTB struct {
	testing.TB
	skipped, failed string
}

func (f *fakeTB) Helper()                           {}
func (f *fakeTB) Skipf(format string, args ...any)  { f.skipped = fmt.Sprintf(format, args...) }
func (f *fakeTB) Fatalf(format string, args ...any) { f.failed = fmt.Sprintf(format, args...) }

func TestUnavailable(t *testing.T) {
	missing := fmt.Errorf("PostgreSQL server %w: initdb not found", ErrNotInstalled)
	broken := errors.New("postgres exited: could not map shared memory")
	tests := []struct {
		name, ci     string
		err          error
		skip, fail   bool
		wantInMessge string
	}{
		{"missing outside CI skips with install hint", "", missing, true, false, "scripts/deps.sh"},
		{"missing in CI fails", "true", missing, false, true, "initdb not found"},
		{"broken outside CI fails", "", broken, false, true, "shared memory"},
		{"broken in CI fails", "true", broken, false, true, "shared memory"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("CI", tc.ci)
			f := &fakeTB{}
			unavailable(f, tc.err)
			if (f.skipped != "") != tc.skip || (f.failed != "") != tc.fail {
				t.Fatalf("skipped=%q failed=%q; want skip=%v fail=%v", f.skipped, f.failed, tc.skip, tc.fail)
			}
			if msg := f.skipped + f.failed; !strings.Contains(msg, tc.wantInMessge) {
				t.Errorf("message %q lacks %q", msg, tc.wantInMessge)
			}
		})
	}
}

func TestServiceAccountMissingUser(t *testing.T) {
	a, err := serviceAccount("iamdb-no-such-user", "PostgreSQL")
	if os.Geteuid() != 0 {
		if a != nil || err != nil {
			t.Fatalf("not root: got %v, %v; want to run as ourselves", a, err)
		}
		return
	}
	if !errors.Is(err, ErrNotInstalled) || !strings.Contains(err.Error(), "iamdb-no-such-user") {
		t.Fatalf("root without the OS user: err = %v; want ErrNotInstalled naming the user", err)
	}
}

func TestFreePort(t *testing.T) {
	p, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		t.Fatalf("port %d from freePort cannot be bound: %v", p, err)
	}
	l.Close()
}
