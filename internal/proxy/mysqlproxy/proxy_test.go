package mysqlproxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-sql-driver/mysql"

	"github.com/iamdb/iamdb/internal/identity"
	"github.com/iamdb/iamdb/internal/sigv4"
)

func driverErr(err error) (uint16, string) {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number, me.Message
	}
	return 0, ""
}

// awsToken runs the real AWS CLI's generate-db-auth-token.
func (h *harness) awsToken(t *testing.T, user, keyID, secret string) string {
	t.Helper()
	aws := requireTool(t, "aws")
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(aws, "rds", "generate-db-auth-token", "--hostname", "localhost",
		"--port", strconv.Itoa(h.port), "--username", user, "--region", testRegion)
	cmd.Env = append(cleanEnv(), "AWS_ACCESS_KEY_ID="+keyID, "AWS_SECRET_ACCESS_KEY="+secret,
		"AWS_DEFAULT_REGION="+testRegion, "AWS_CONFIG_FILE="+empty, "AWS_SHARED_CREDENTIALS_FILE="+empty,
		"AWS_EC2_METADATA_DISABLED=true")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("aws rds generate-db-auth-token: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// mariadbCLI runs the real mariadb client against the proxy with the RDS
// settings: TLS verifying iamdb's certificate, clear-text plugin enabled.
// The password goes through MYSQL_PWD, never the command line.
func (h *harness) mariadbCLI(t *testing.T, user, password string, extra ...string) ([]byte, error) {
	t.Helper()
	return h.cli(t, "mariadb", user, password, extra...)
}

// cli runs the named command-line client (mariadb, or mysql: MariaDB's
// under its historical name, or Oracle's) as mariadbCLI does.
func (h *harness) cli(t *testing.T, name, user, password string, extra ...string) ([]byte, error) {
	t.Helper()
	bin := requireTool(t, name)
	args := []string{"--no-defaults", "--ssl", "--ssl-ca=" + h.caFile, "--ssl-verify-server-cert",
		"--enable-cleartext-plugin", "-h", "localhost", "--protocol=TCP", "-P", strconv.Itoa(h.port),
		"-u", user, "--connect-timeout=20", "-N", "-B"}
	args = append(args, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(cleanEnv(), "MYSQL_PWD="+password)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	// MariaDB's client accepts the flag RDS's instructions use but calls
	// it obsolete (it always allows the clear-text plugin), on stdout.
	out = bytes.ReplaceAll(out, []byte("WARNING: option '--enable-cleartext-plugin' is obsolete.\n"), nil)
	if err != nil {
		return append(out, stderr.Bytes()...), err
	}
	return out, nil
}

// TestMariaDBClient drives the real mariadb client with tokens from the
// real AWS CLI and from aws-sdk-go-v2.
func TestMariaDBClient(t *testing.T) {
	h := newHarness(t)
	id, secret := h.user("alice", connectPolicy("app"))
	for _, tc := range []struct {
		name  string
		token func() string
	}{
		{"aws-cli", func() string { return h.awsToken(t, "app", id, secret) }},
		{"aws-sdk-go-v2", func() string { return h.sdkToken(h.endpoint, testRegion, "app", id, secret, "") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := h.mariadbCLI(t, "app", tc.token(), h.database,
				"-e", "SELECT CURRENT_USER(), DATABASE(), @@version = VERSION(); SHOW STATUS LIKE 'Ssl_cipher'")
			if err != nil {
				t.Fatalf("mariadb: %v\n%s\nlog:\n%s", err, out, h.logs)
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			if len(lines) != 2 || lines[0] != "app@%\t"+h.database+"\t1" {
				t.Fatalf("mariadb printed %q", out)
			}
			// The upstream leg is TLS too.
			if !strings.HasPrefix(lines[1], "Ssl_cipher\t") || strings.TrimSpace(strings.TrimPrefix(lines[1], "Ssl_cipher")) == "" {
				t.Fatalf("upstream leg without TLS: %q", lines[1])
			}
		})
	}
	h.logs.find(t, "IAM login accepted", "principal", "arn:aws:iam::123456789012:user/alice", "user", "app")
	h.obs.wait(t, ResultOK, 2)

	t.Run("server version", func(t *testing.T) {
		// The client is greeted with the real server's version.
		out, err := h.mariadbCLI(t, "app", h.sdkToken(h.endpoint, testRegion, "app", id, secret, ""), "-e", "status")
		if err != nil {
			t.Fatalf("mariadb: %v\n%s", err, out)
		}
		db := sqlRoot(t, h)
		var version string
		if err := db.QueryRow("SELECT VERSION()").Scan(&version); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), version) {
			t.Fatalf("status does not show server version %s:\n%s", version, out)
		}
	})

	t.Run("mysql command", func(t *testing.T) {
		out, err := h.cli(t, "mysql", "app", h.sdkToken(h.endpoint, testRegion, "app", id, secret, ""), h.database,
			"-e", "SELECT CURRENT_USER(), DATABASE()")
		if err != nil || strings.TrimSpace(string(out)) != "app@%\t"+h.database {
			t.Fatalf("mysql: %v\n%s", err, out)
		}
	})

	t.Run("local infile", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "rows.csv")
		var in bytes.Buffer
		for i := range 3000 {
			fmt.Fprintf(&in, "%d,name %d\n", i, i)
		}
		if err := os.WriteFile(file, in.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		script := fmt.Sprintf("CREATE TABLE cli_rows(id INT, name TEXT); LOAD DATA LOCAL INFILE '%s' INTO TABLE cli_rows FIELDS TERMINATED BY ','; SELECT COUNT(*), SUM(id) FROM cli_rows", file)
		out, err := h.mariadbCLI(t, "app", h.sdkToken(h.endpoint, testRegion, "app", id, secret, ""), h.database, "--local-infile=1", "-e", script)
		if err != nil {
			t.Fatalf("mariadb: %v\n%s", err, out)
		}
		if got := strings.TrimSpace(string(out)); got != "3000\t4498500" {
			t.Fatalf("got %q", got)
		}
	})
}

func sqlRoot(t testing.TB, h *harness) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", h.my.RootDSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestGoMySQLClient: go-mysql's client logs in with a token over TLS (it
// answers the switch to mysql_clear_password by itself), runs a query and
// a prepared statement, and quits; without TLS it is refused before the
// token is asked for.
func TestGoMySQLClient(t *testing.T) {
	h := newHarness(t)
	id, secret := h.user("alice", connectPolicy("app"))
	tok := h.sdkToken(h.endpoint, testRegion, "app", id, secret, "")
	pem, err := os.ReadFile(h.caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	withTLS := func(c *client.Conn) error {
		c.SetTLSConfig(&tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12})
		return nil
	}
	conn, err := client.Connect(h.addr, "app", tok, h.database, withTLS)
	if err != nil {
		t.Fatalf("go-mysql login: %v\nlog:\n%s", err, h.logs)
	}
	r, err := conn.Execute("SELECT CURRENT_USER(), DATABASE()")
	if err != nil {
		t.Fatal(err)
	}
	user, _ := r.GetString(0, 0)
	db, _ := r.GetString(0, 1)
	if user != "app@%" || db != h.database {
		t.Fatalf("CURRENT_USER() %q DATABASE() %q", user, db)
	}
	stmt, err := conn.Prepare("SELECT ? + 1")
	if err != nil {
		t.Fatal(err)
	}
	if r, err = stmt.Execute(41); err != nil {
		t.Fatal(err)
	}
	if v, _ := r.GetInt(0, 0); v != 42 {
		t.Fatalf("prepared statement returned %d", v)
	}
	stmt.Close()
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
	h.obs.wait(t, ResultOK, 1)

	_, err = client.Connect(h.addr, "app", tok, h.database)
	if err == nil || !strings.Contains(err.Error(), "requires TLS") {
		t.Fatalf("go-mysql without TLS: %v", err)
	}
	h.obs.wait(t, ResultTLSRequired, 1)
}

// TestMariaDBClientWithoutTLS: the mariadb client without TLS is refused
// with a message that says TLS is required.
func TestMariaDBClientWithoutTLS(t *testing.T) {
	bin := requireTool(t, "mariadb")
	h := newHarness(t)
	cmd := exec.Command(bin, "--no-defaults", "--skip-ssl", "--enable-cleartext-plugin", "-h", "127.0.0.1",
		"-P", strconv.Itoa(h.port), "-u", "app", "-e", "SELECT 1")
	cmd.Env = append(cleanEnv(), "MYSQL_PWD=not-a-token")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "ERROR 1045") || !strings.Contains(string(out), "requires TLS") {
		t.Fatalf("mariadb without TLS: err %v, output %s", err, out)
	}
}

// TestNoTLSRefusedBeforeToken proves at the packet level that a client
// without TLS is never asked for a clear-text password: the answer to its
// handshake response is an ERR packet, not an auth switch.
func TestNoTLSRefusedBeforeToken(t *testing.T) {
	h := newHarness(t)
	rc := h.rawDial()
	if rc.greet.caps&capSSL == 0 {
		t.Fatal("the greeting does not offer TLS")
	}
	if rc.greet.plugin == pluginClear {
		t.Fatal("the greeting asks for a clear-text password")
	}
	resp := &handshakeResponse{caps: rawClientCaps | capMySQL, maxPacket: 1 << 24, charset: 45,
		user: "app", database: h.database, plugin: pluginCachingSHA2,
		authData: scrambleSHA2(rc.greet.scramble, "whatever")}
	if err := rc.pc.write(resp.encode(false)); err != nil {
		t.Fatal(err)
	}
	p, err := rc.pc.read(maxLoginPacket)
	if err != nil {
		t.Fatal(err)
	}
	if p[0] != pktERR {
		t.Fatalf("first answer is %x, want ERR (never an auth switch)", p)
	}
	e := parseError(p)
	if e.code != erAccessDenied || e.sqlState != "28000" || !strings.Contains(e.message, "requires TLS") || !strings.Contains(e.message, "'app'") {
		t.Fatalf("error %+v", e)
	}
	if _, err := rc.pc.read(maxLoginPacket); err == nil {
		t.Fatal("connection still open after the error")
	}
	h.logs.find(t, "login refused", "reason", ResultTLSRequired, "user", "app")
	h.obs.wait(t, ResultTLSRequired, 1)
}

// TestDriverSession: go-sql-driver/mysql with tls=custom and
// allowCleartextPasswords, through a whole session.
func TestDriverSession(t *testing.T) {
	h := newHarness(t)
	id, secret := h.user("alice", connectPolicy("app"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tok := h.sdkToken(h.endpoint, testRegion, "app", id, secret, "")
	cfg := h.driverConfig("app", tok)
	cfg.MultiStatements = true
	cfg.AllowAllFiles = true
	db := h.open(cfg)

	var user, version, upstreamVersion string
	if err := db.QueryRowContext(ctx, "SELECT CURRENT_USER(), VERSION()").Scan(&user, &version); err != nil {
		t.Fatalf("query: %v\nlog:\n%s", err, h.logs)
	}
	if err := sqlRoot(t, h).QueryRow("SELECT VERSION()").Scan(&upstreamVersion); err != nil {
		t.Fatal(err)
	}
	if user != "app@%" || version != upstreamVersion {
		t.Fatalf("CURRENT_USER() %q VERSION() %q", user, version)
	}

	t.Run("multi statements", func(t *testing.T) {
		rows, err := db.QueryContext(ctx, "SELECT 1; SELECT 2, 'two'; DO 1; SELECT 3")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var got []string
		for {
			cols, _ := rows.Columns()
			for rows.Next() {
				vals := make([]sql.RawBytes, len(cols))
				ptrs := make([]any, len(cols))
				for i := range vals {
					ptrs[i] = &vals[i]
				}
				if err := rows.Scan(ptrs...); err != nil {
					t.Fatal(err)
				}
				got = append(got, fmt.Sprintf("%s", vals))
			}
			if !rows.NextResultSet() {
				break
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		if strings.Join(got, " ") != "[1] [2 two] [3]" {
			t.Fatalf("result sets %v", got)
		}
	})

	t.Run("prepared statements", func(t *testing.T) {
		if _, err := db.ExecContext(ctx, "CREATE TABLE items(id INT PRIMARY KEY, name VARCHAR(40), price DECIMAL(10,2), at DATETIME)"); err != nil {
			t.Fatal(err)
		}
		stmt, err := db.PrepareContext(ctx, "INSERT INTO items VALUES (?, ?, ?, ?)")
		if err != nil {
			t.Fatal(err)
		}
		defer stmt.Close()
		at := time.Date(2026, 11, 22, 1, 2, 3, 0, time.UTC)
		for i := range 50 {
			if _, err := stmt.ExecContext(ctx, i, fmt.Sprintf("item '%d'", i), float64(i)+0.5, at); err != nil {
				t.Fatal(err)
			}
		}
		var n int
		var name string
		var sum float64
		if err := db.QueryRowContext(ctx, "SELECT COUNT(*), MAX(name), SUM(price) FROM items WHERE id >= ?", 0).Scan(&n, &name, &sum); err != nil {
			t.Fatal(err)
		}
		if n != 50 || name != "item '9'" || sum != 1250 {
			t.Fatalf("got %d %q %v", n, name, sum)
		}
	})

	t.Run("load data local infile", func(t *testing.T) {
		// More than 256 packets of 16 KiB (go-sql-driver's chunk), so the
		// client's sequence numbers wrap past 255 during the transfer; every
		// packet starts with 0x11, the code of COM_CHANGE_USER, since the
		// 64-byte lines divide 16 KiB.
		const rows = 80000
		var in bytes.Buffer
		for i := range rows {
			fmt.Fprintf(&in, "\x11%054d\t%07d\n", i, i)
		}
		mysql.RegisterReaderHandler("rows", func() io.Reader { return bytes.NewReader(in.Bytes()) })
		defer mysql.DeregisterReaderHandler("rows")
		if _, err := db.ExecContext(ctx, "CREATE TABLE loaded(name TEXT, id INT)"); err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, "LOAD DATA LOCAL INFILE 'Reader::rows' INTO TABLE loaded"); err != nil {
			t.Fatalf("load data: %v\nlog:\n%s", err, h.logs)
		}
		var n, sum, length, marked int
		if err := db.QueryRowContext(ctx, "SELECT COUNT(*), SUM(id), SUM(LENGTH(name)), SUM(name LIKE CONCAT(CHAR(17), '%')) FROM loaded").Scan(&n, &sum, &length, &marked); err != nil {
			t.Fatal(err)
		}
		if n != rows || sum != rows*(rows-1)/2 || length != 55*rows || marked != rows {
			t.Fatalf("loaded %d rows, sum %d, %d bytes of names, %d marked", n, sum, length, marked)
		}
	})

	t.Run("kill query from another connection", func(t *testing.T) {
		conn, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		var connID int64
		if err := conn.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&connID); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		var slept int
		go func() { done <- conn.QueryRowContext(ctx, "SELECT SLEEP(30)").Scan(&slept) }()
		root := sqlRoot(t, h)
		for {
			var n int
			if err := root.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ? AND INFO = 'SELECT SLEEP(30)'", connID).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n > 0 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		other, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		if _, err := other.ExecContext(ctx, fmt.Sprintf("KILL QUERY %d", connID)); err != nil {
			t.Fatalf("KILL QUERY %d: %v", connID, err)
		}
		// SLEEP returns 1 when interrupted (or the query fails with
		// ER_QUERY_INTERRUPTED); 0 would mean it ran its 30 seconds.
		err = <-done
		if code, _ := driverErr(err); !(err == nil && slept == 1) && code != 1317 {
			t.Fatalf("killed query: %v, SLEEP returned %d", err, slept)
		}
	})

	db.Close()
	deadline := time.Now().Add(10 * time.Second)
	for h.srv.ActiveSessions() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := h.srv.ActiveSessions(); n != 0 {
		t.Fatalf("%d sessions still active after the clients closed", n)
	}
	h.obs.mu.Lock()
	defer h.obs.mu.Unlock()
	if h.obs.started < 2 || h.obs.ended != h.obs.started || h.obs.bytesIn < 64*80000 || h.obs.bytesOut < 1000 {
		t.Fatalf("observer: %d started, %d ended, %d bytes in, %d out", h.obs.started, h.obs.ended, h.obs.bytesIn, h.obs.bytesOut)
	}
}

// TestResetAndChangeUser: COM_RESET_CONNECTION is relayed and resets the
// session; COM_CHANGE_USER is refused and ends the session.
func TestResetAndChangeUser(t *testing.T) {
	h := newHarness(t)
	id, secret := h.user("alice", connectPolicy("app"))
	tok := h.sdkToken(h.endpoint, testRegion, "app", id, secret, "")
	rc, err := h.rawLogin("app", tok)
	if err != nil {
		t.Fatalf("login: %v\nlog:\n%s", err, h.logs)
	}
	if _, err := rc.query("SET @marker = 'set'"); err != nil {
		t.Fatal(err)
	}
	if v, err := rc.query("SELECT @marker"); err != nil || v != "set" {
		t.Fatalf("@marker = %q, %v", v, err)
	}
	p, err := rc.command([]byte{0x1f}) // COM_RESET_CONNECTION
	if err != nil || p[0] != pktOK {
		t.Fatalf("COM_RESET_CONNECTION: %x %v", p, err)
	}
	if v, err := rc.query("SELECT CONCAT(@marker IS NULL, ':', CURRENT_USER())"); err != nil || v != "1:app@%" {
		t.Fatalf("after reset: %q, %v", v, err)
	}

	// COM_CHANGE_USER to root, with root's real password: still refused.
	change := append([]byte{comChangeUser}, "root\x00"...)
	auth := scrambleNative(rc.greet.scramble, h.my.RootPassword)
	change = append(change, byte(len(auth)))
	change = append(change, auth...)
	change = append(change, 0, 45, 0)
	change = append(change, pluginNative+"\x00"...)
	p, err = rc.command(change)
	if err != nil {
		t.Fatal(err)
	}
	if e := parseError(p); p[0] != pktERR || e.code != erNotSupported || !strings.Contains(e.message, "COM_CHANGE_USER") {
		t.Fatalf("COM_CHANGE_USER answered %x", p)
	}
	if _, err := rc.query("SELECT CURRENT_USER()"); err == nil {
		t.Fatal("session still open after COM_CHANGE_USER")
	}
	h.logs.find(t, "COM_CHANGE_USER refused; session closed", "user", "app")
}

func TestRefusals(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	id, secret := h.user("alice", connectPolicy("app"))
	inactiveID, inactiveSecret := h.user("bob", connectPolicy("app"))
	if err := h.store.UpdateAccessKeyStatus(ctx, inactiveID, identity.KeyInactive); err != nil {
		t.Fatal(err)
	}
	denyID, denySecret := h.user("mallory", `{"Version":"2012-10-17","Statement":[
		{"Effect":"Allow","Action":"rds-db:connect","Resource":"*"},
		{"Sid":"NoApp","Effect":"Deny","Action":"rds-db:connect","Resource":"arn:aws:rds-db:*:*:dbuser:*/app"}]}`)

	// Temporary credentials that expired an hour ago: created with the
	// store's clock two hours back.
	role, err := h.store.CreateRole(ctx, identity.Role{AccountID: testAccount, Name: "db-users",
		TrustPolicy: `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"123456789012"},"Action":"sts:AssumeRole"}]}`})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.store.PutInlinePolicy(ctx, identity.RoleRef(testAccount, "db-users"), "connect", connectPolicy("app")); err != nil {
		t.Fatal(err)
	}
	h.storeAge.Store(int64(2 * time.Hour))
	_, creds, err := h.store.CreateSession(ctx, identity.Session{AccountID: testAccount, RoleID: role.ID, RoleARN: role.ARN(),
		SessionName: "laptop", Expiration: time.Now().Add(-time.Hour)})
	h.storeAge.Store(0)
	if err != nil {
		t.Fatal(err)
	}

	sign := func(at time.Time, endpoint, region, user, key, sec, session string) string {
		tok, err := sigv4.Sign(sigv4.SignInput{Endpoint: endpoint, Region: region, DBUser: user,
			AccessKeyID: key, SecretAccessKey: sec, SessionToken: session, Time: at})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	now := time.Now()
	denied := func(u string) string {
		return fmt.Sprintf("Access denied for user '%s'@'127.0.0.1' (using password: YES)", u)
	}

	for _, tc := range []struct {
		name, user, password string
		reason               string // what the log says; "" for the upstream's own refusal
	}{
		{"expired token", "app", sign(now.Add(-20*time.Minute), h.endpoint, testRegion, "app", id, secret, ""), "ExpiredToken"},
		{"token for another user", "app", sign(now, h.endpoint, testRegion, "report", id, secret, ""), "UserMismatch"},
		{"token for another endpoint", "app", sign(now, "db.example.com:3306", testRegion, "app", id, secret, ""), "EndpointMismatch"},
		{"wrong region", "app", h.sdkToken(h.endpoint, "eu-west-1", "app", id, secret, ""), "WrongRegion"},
		{"inactive key", "app", sign(now, h.endpoint, testRegion, "app", inactiveID, inactiveSecret, ""), "InactiveAccessKey"},
		{"expired temporary credentials", "app", sign(now, h.endpoint, testRegion, "app", creds.AccessKeyID, creds.SecretAccessKey, creds.SessionToken), "ExpiredCredentials"},
		{"implicit deny", "report", sign(now, h.endpoint, testRegion, "report", id, secret, ""), "AccessDenied"},
		{"explicit deny", "app", sign(now, h.endpoint, testRegion, "app", denyID, denySecret, ""), "AccessDenied"},
		{"IAM user with a plain password", "app", userPass["app"], "MalformedToken"},
		{"bad signature", "app", sign(now, h.endpoint, testRegion, "app", id, string(secret[0]^1)+secret[1:], "") /* always another secret */, "InvalidSignature"},
		{"non-IAM user with a wrong password", relayUser, "not-" + relayPassword, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(h.logs.records())
			_, err := h.connect(ctx, tc.user, tc.password)
			code, msg := driverErr(err)
			if code != erAccessDenied || msg != denied(tc.user) {
				t.Fatalf("got %v, want 1045 %q", err, denied(tc.user))
			}
			want, reasonKey := "login refused", tc.reason
			if tc.reason == "" {
				want = "upstream refused the relayed password login"
			}
			var rec map[string]any
			for range 200 {
				for _, r := range h.logs.records()[before:] {
					if r["msg"] == want {
						rec = r
					}
				}
				if rec != nil {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if rec == nil || rec["level"] != "WARN" || (reasonKey != "" && rec["reason"] != reasonKey) || (reasonKey == "" && fmt.Sprint(rec["code"]) != "1045") {
				t.Fatalf("log record %v, want %q reason %s; log:\n%s", rec, want, tc.reason, h.logs)
			}
			if strings.Contains(h.logs.String(), tc.password) {
				t.Fatal("the password reached the log")
			}
			if tc.name == "explicit deny" && (rec["principal"] != "arn:aws:iam::123456789012:user/mallory" || !strings.Contains(fmt.Sprint(rec["detail"]), "NoApp")) {
				t.Fatalf("explicit deny log lacks principal or statement: %v", rec)
			}
		})
	}
	h.obs.wait(t, "AccessDenied", 2)
	h.obs.wait(t, ResultUpstreamRejected, 1)
}

// TestPasswordRelay: users that are not IAM-enabled keep their ordinary
// password login (mysql_native_password here), relayed packet by packet
// with the upstream's scramble, whatever TLS each leg has, and without the
// client having to allow clear-text passwords.
func TestPasswordRelay(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name        string
		upstreamTLS bool
		clientTLS   bool
	}{
		{"tls to both", true, true},
		{"plaintext client", true, false},
		{"plaintext upstream", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, func(c *Config) {
				if !tc.upstreamTLS {
					c.Upstream.TLS = nil
				}
			})
			config := func(password string) *mysql.Config {
				cfg := h.driverConfig(relayUser, password)
				cfg.AllowCleartextPasswords = false
				if !tc.clientTLS {
					cfg.TLSConfig = "false"
				}
				return cfg
			}
			_, err := h.open(config("wrong")).ExecContext(ctx, "DO 1")
			if code, msg := driverErr(err); code != erAccessDenied || !strings.Contains(msg, "Access denied for user 'pwuser'") {
				t.Fatalf("wrong password: %v", err)
			}
			h.logs.find(t, "upstream refused the relayed password login", "code", "1045")

			db := h.open(config(relayPassword))
			var user, cipher string
			if err := db.QueryRowContext(ctx, "SELECT CURRENT_USER()").Scan(&user); err != nil || user != relayUser+"@%" {
				t.Fatalf("CURRENT_USER() %q %v\nlog:\n%s", user, err, h.logs)
			}
			var name string
			if err := db.QueryRowContext(ctx, "SHOW STATUS LIKE 'Ssl_cipher'").Scan(&name, &cipher); err != nil {
				t.Fatal(err)
			}
			if (cipher != "") != tc.upstreamTLS {
				t.Fatalf("upstream leg cipher %q, want TLS %v", cipher, tc.upstreamTLS)
			}
			h.obs.wait(t, ResultPasswordRelayed, 1)
			h.obs.wait(t, ResultUpstreamRejected, 1)
		})
	}
}

// TestMariaDBClientPasswordRelay: the mariadb client logs in as a user
// that is not IAM-enabled with its ordinary password.
func TestMariaDBClientPasswordRelay(t *testing.T) {
	bin := requireTool(t, "mariadb")
	h := newHarness(t)
	cmd := exec.Command(bin, "--no-defaults", "--ssl", "--ssl-ca="+h.caFile, "--ssl-verify-server-cert", "-h", "localhost",
		"--protocol=TCP", "-P", strconv.Itoa(h.port), "-u", relayUser, "-N", "-B", "-e", "SELECT CURRENT_USER()")
	cmd.Env = append(cleanEnv(), "MYSQL_PWD="+relayPassword)
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != relayUser+"@%" {
		t.Fatalf("mariadb: %v\n%s\nlog:\n%s", err, out, h.logs)
	}
}

func TestUpstreamDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	h := newHarness(t, func(c *Config) { c.Upstream = Upstream{Address: dead, DialTimeout: 5 * time.Second} })
	id, secret := h.user("alice", connectPolicy("app"))
	ctx := context.Background()
	want := fmt.Sprintf("iamdb: instance orders: upstream %s is unavailable", dead)

	_, err = h.connect(ctx, "app", h.sdkToken(h.endpoint, testRegion, "app", id, secret, ""))
	if code, msg := driverErr(err); code != crConnectionError || msg != want {
		t.Fatalf("IAM login with the upstream down: %v", err)
	}
	_, err = h.connect(ctx, relayUser, relayPassword)
	if code, msg := driverErr(err); code != crConnectionError || msg != want {
		t.Fatalf("password login with the upstream down: %v", err)
	}
	h.obs.wait(t, ResultUpstreamUnavailable, 2)
	if n := h.obs.dialFailures(); n != 2 {
		t.Fatalf("%d dial failures reported, want 2", n)
	}
}

func TestUnknownDatabase(t *testing.T) {
	h := newHarness(t)
	id, secret := h.user("alice", connectPolicy("app"))
	cfg := h.driverConfig("app", h.sdkToken(h.endpoint, testRegion, "app", id, secret, ""))
	cfg.DBName = "no_such_db"
	_, err := h.open(cfg).Exec("DO 1")
	if code, msg := driverErr(err); code != 1049 || !strings.Contains(msg, "no_such_db") {
		t.Fatalf("got %v", err)
	}
	h.logs.find(t, "upstream refused the login", "code", "1049")
	h.obs.wait(t, ResultUpstreamRejected, 1)
}

func TestConcurrentLogins(t *testing.T) {
	// 200 upstream logins at once can take a loaded machine longer than
	// the default timeouts; this test is about correctness, not speed.
	h := newHarness(t, func(c *Config) {
		c.HandshakeTimeout = time.Minute
		c.Upstream.DialTimeout = time.Minute
	})
	id, secret := h.user("alice", connectPolicy("app"))
	tok := h.sdkToken(h.endpoint, testRegion, "app", id, secret, "")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	conns := make(chan *sql.Conn, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := h.connect(ctx, "app", tok)
			if err != nil {
				errs <- err
				return
			}
			conns <- conn
			var user string
			if err := conn.QueryRowContext(ctx, "SELECT CURRENT_USER()").Scan(&user); err != nil || user != "app@%" {
				errs <- fmt.Errorf("query: %q %v", user, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	close(conns)
	if got := h.srv.ActiveSessions(); got != n-len(errs) {
		t.Errorf("ActiveSessions %d with %d connections open", got, n-len(errs))
	}
	for c := range conns {
		c.Close()
	}
	for err := range errs {
		t.Error(err)
	}
	h.obs.wait(t, ResultOK, n)
}

func TestShutdownDrains(t *testing.T) {
	h := newHarness(t)
	id, secret := h.user("alice", connectPolicy("app"))
	ctx := context.Background()
	conn, err := h.connect(ctx, "app", h.sdkToken(h.endpoint, testRegion, "app", id, secret, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	shut := make(chan error, 1)
	sctx, cancel := context.WithCancel(ctx)
	go func() { shut <- h.srv.Shutdown(sctx) }()

	// New connections are refused once Shutdown runs…
	for {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			break
		}
		c.Close()
		time.Sleep(10 * time.Millisecond)
	}
	// …while the live session keeps working.
	var one int
	if err := conn.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("live session during shutdown: %v", err)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a session open", err)
	default:
	}
	// The drain deadline passes: the session is closed.
	cancel()
	if err := <-shut; !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := conn.PingContext(ctx); err == nil {
		t.Fatal("session still alive after the drain deadline")
	}
}

func TestShutdownReturnsWhenSessionsEnd(t *testing.T) {
	h := newHarness(t)
	id, secret := h.user("alice", connectPolicy("app"))
	ctx := context.Background()
	conn, err := h.connect(ctx, "app", h.sdkToken(h.endpoint, testRegion, "app", id, secret, ""))
	if err != nil {
		t.Fatal(err)
	}
	shut := make(chan error, 1)
	go func() { shut <- h.srv.Shutdown(ctx) }()
	// h.connect keeps no idle connections: Close ends the session.
	conn.Close()
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// TestUpdate: a new upstream applies to new sessions only.
func TestUpdate(t *testing.T) {
	h := newHarness(t)
	id, secret := h.user("alice", connectPolicy("app"))
	ctx := context.Background()
	tok := h.sdkToken(h.endpoint, testRegion, "app", id, secret, "")
	conn, err := h.connect(ctx, "app", tok)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	cfg := h.cfg
	cfg.Upstream = Upstream{Address: "127.0.0.1:1", DialTimeout: time.Second}
	h.srv.Update(cfg)
	if _, err := h.connect(ctx, "app", tok); !strings.Contains(fmt.Sprint(err), "127.0.0.1:1 is unavailable") {
		t.Fatalf("new session after Update: %v", err)
	}
	if err := conn.PingContext(ctx); err != nil {
		t.Fatalf("live session after Update: %v", err)
	}
	h.srv.Update(Config{}) // invalid: ignored
	h.logs.find(t, "configuration update ignored")
	h.srv.Update(h.cfg)
	c2, err := h.connect(ctx, "app", tok)
	if err != nil {
		t.Fatal(err)
	}
	c2.Close()
}

// TestHandshakeTimeout: a client that reads the greeting and says nothing
// is cut off.
func TestHandshakeTimeout(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.HandshakeTimeout = 200 * time.Millisecond })
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadAll(c); err != nil {
		t.Fatalf("the server should close the connection: %v", err)
	}
	h.logs.find(t, "login timed out")
	h.obs.wait(t, ResultHandshakeTimeout, 1)
}

func TestNewValidates(t *testing.T) {
	h := newHarness(t)
	good := h.cfg
	for name, mutate := range map[string]func(*Config){
		"no instance":      func(c *Config) { c.Instance = nil },
		"no TLS":           func(c *Config) { c.TLS = nil },
		"no authenticator": func(c *Config) { c.Authenticator = nil },
		"no backend":       func(c *Config) { c.Backend = nil },
		"bad upstream":     func(c *Config) { c.Upstream.Address = "nowhere" },
	} {
		c := good
		mutate(&c)
		if _, err := New(c); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
}

// TestUpstreamKeyExchange: once an upstream handshake shows that the
// upstream does not take the post-quantum key exchange, iamdb stops
// computing its key share for upstream logins; an upstream that takes it
// keeps getting it.
func TestUpstreamKeyExchange(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	// What the upstream settles on when offered Go's default.
	upTLS, err := h.my.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	var curve tls.CurveID
	upTLS.VerifyConnection = func(cs tls.ConnectionState) error { curve = cs.CurveID; return nil }
	direct, err := mysql.ParseDSN(h.my.DSN("app", userPass["app"], h.database))
	if err != nil {
		t.Fatal(err)
	}
	direct.TLS = upTLS
	c, err := mysql.NewConnector(direct)
	if err != nil {
		t.Fatal(err)
	}
	if err := sql.OpenDB(c).PingContext(ctx); err != nil || curve == 0 {
		t.Fatalf("direct TLS login: curve %v, %v", curve, err)
	}

	id, secret := h.user("alice", connectPolicy("app"))
	tok := h.sdkToken(h.endpoint, testRegion, "app", id, secret, "")
	for range 2 {
		conn, err := h.connect(ctx, "app", tok)
		if err != nil {
			t.Fatal(err)
		}
		conn.Close()
	}
	if declined := h.srv.cur.Load().pqDeclined.Load(); declined != (curve != tls.X25519MLKEM768) {
		t.Fatalf("upstream settles on %v; iamdb stopped offering the post-quantum key share: %v", curve, declined)
	}
}
