package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awssts "github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/jackc/pgx/v5"

	"github.com/iamdb/iamdb/internal/sigv4"
)

// TestAuditSurvivesKill: `iamdb serve` is killed with SIGKILL during a
// burst of logins. Every session a client saw established (it ran a
// query) has its connect event in the log after a restart, a torn last
// line is cut off on restart, and `iamdb audit verify` passes.
func TestAuditSurvivesKill(t *testing.T) {
	pg := startPostgres(t)
	ctx := context.Background()
	appPassword := fmt.Sprint("app-", time.Now().UnixNano())
	admin, err := pgx.Connect(ctx, pg.AdminDSN())
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{"CREATE ROLE rds_iam NOLOGIN", "CREATE USER app PASSWORD '" + appPassword + "'",
		"GRANT rds_iam TO app", "CREATE DATABASE orders OWNER app"} {
		if _, err := admin.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	admin.Close(ctx)

	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "iamdb.yaml")
	os.WriteFile(filepath.Join(dir, "secrets.yaml"), []byte("app: "+appPassword+"\n"), 0o600)
	port, metricsPort, apiPort := freeLoopbackPort(t), freeLoopbackPort(t), freeLoopbackPort(t)
	endpoint := fmt.Sprintf("127.0.0.1:%d", port)
	cfg := fmt.Sprintf(`data_dir: ./data
metrics: {listen: "127.0.0.1:%d"}
api: {listen: "127.0.0.1:%d"}
audit: {fail_closed: true}
instances:
  - name: orders
    engine: postgres
    resource_id: db-SERVE000000000000000000000
    listen: %s
    upstream: {address: "%s", tls: verify-full, ca: "%s"}
    backend_auth: {mode: secrets, secrets_file: secrets.yaml}
    iam_users: [app]
`, metricsPort, apiPort, endpoint, pg.Addr(), pg.CAFile)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"IAMDB_CONFIG=" + cfgPath}
	must(t, iamdb(t, env, "", "init", "--output", "json"))
	os.WriteFile(filepath.Join(dir, "identities.yaml"), []byte(serveIdentities), 0o600)
	must(t, iamdb(t, env, "", "apply", "-f", filepath.Join(dir, "identities.yaml")))
	var key struct {
		AccessKey struct{ AccessKeyId, SecretAccessKey string }
	}
	if err := json.Unmarshal([]byte(must(t, iamdb(t, env, "", "access-key", "create", "--user", "alice"))), &key); err != nil {
		t.Fatal(err)
	}
	caBundle := filepath.Join(dir, "data", "ca-bundle.pem")
	auditFile := filepath.Join(dir, "data", "audit.jsonl")

	serve := func() (*exec.Cmd, *lockedBuffer, chan error) {
		logs := &lockedBuffer{}
		cmd := exec.Command(bin, "serve")
		cmd.Env = append(cleanEnv(t), env...)
		cmd.Stdout, cmd.Stderr = logs, logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		t.Cleanup(func() {
			cmd.Process.Kill()
			if t.Failed() {
				t.Logf("iamdb serve output:\n%s", logs)
			}
		})
		waitUntil(t, "iamdb serve to listen", func() bool {
			select {
			case err := <-exited:
				t.Fatalf("iamdb serve exited: %v\n%s", err, logs)
			default:
			}
			return strings.Contains(logs.String(), "msg=listening")
		})
		return cmd, logs, exited
	}
	first, _, exited := serve()

	tok, err := sigv4.Sign(sigv4.SignInput{Endpoint: endpoint, Region: "us-east-1", DBUser: "app",
		AccessKeyID: key.AccessKey.AccessKeyId, SecretAccessKey: key.AccessKey.SecretAccessKey, Time: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	connCfg, err := pgx.ParseConfig(fmt.Sprintf("host=127.0.0.1 port=%d user=app dbname=orders sslmode=verify-full sslrootcert=%s connect_timeout=5", port, caBundle))
	if err != nil {
		t.Fatal(err)
	}
	connCfg.Password = tok

	// An STS call and the audit metrics, before the burst.
	client := awssts.NewFromConfig(aws.Config{Region: "us-east-1", RetryMaxAttempts: 1,
		Credentials: credentials.NewStaticCredentialsProvider(key.AccessKey.AccessKeyId, key.AccessKey.SecretAccessKey, "")},
		func(o *awssts.Options) { o.BaseEndpoint = aws.String(fmt.Sprintf("http://127.0.0.1:%d", apiPort)) })
	if _, err := client.GetCallerIdentity(ctx, &awssts.GetCallerIdentityInput{}); err != nil {
		t.Fatalf("GetCallerIdentity: %v", err)
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort))
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), "iamdb_audit_write_errors_total 0") {
		t.Fatalf("no audit error metric:\n%s", metrics)
	}

	// The burst: clients log in, prove the session works, log out, again.
	var (
		mu          sync.Mutex
		established []uint32 // upstream backend pids of sessions clients used
		stop        atomic.Bool
		wg          sync.WaitGroup
	)
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				c, err := pgx.ConnectConfig(ctx, connCfg)
				if err != nil {
					continue // refused or cut off by the kill: not established
				}
				var pid uint32
				if err := c.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err == nil {
					mu.Lock()
					established = append(established, pid)
					mu.Unlock()
				}
				c.Close(ctx)
			}
		}()
	}
	waitUntil(t, "a burst of logins", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(established) >= 60
	})
	first.Process.Signal(syscall.SIGKILL)
	<-exited
	stop.Store(true)
	wg.Wait()

	// A crash in the middle of write(2) can leave part of a line; kill -9
	// of the process alone cannot, so add one as the disk would have it.
	f, err := os.OpenFile(auditFile, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"eventVersion":"1.08","eventID":"0b5c`)
	f.Close()
	if r := iamdb(t, env, "", "audit", "verify"); r.code == 0 || !strings.Contains(r.stderr, "incomplete last line") {
		t.Fatalf("verify before the restart: exit %d %s", r.code, r.stderr)
	}

	second, logs, exited2 := serve()
	waitUntil(t, "the torn line to be repaired", func() bool { return strings.Contains(logs.String(), "incomplete last line") })
	second.Process.Signal(syscall.SIGTERM)
	<-exited2

	raw, err := os.ReadFile(auditFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{key.AccessKey.SecretAccessKey, tok, appPassword, "X-Amz-Signature"} {
		if strings.Contains(string(raw), secret) {
			t.Fatalf("the audit log holds a credential (%.10s…)", secret)
		}
	}
	for _, want := range []string{`"eventSource":"iam.iamdb","eventName":"CreateAccessKey"`, `"eventSource":"sts.iamdb","eventName":"GetCallerIdentity"`,
		`"eventSource":"iam.iamdb","eventName":"CreateUser"`} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("the audit log has no %s event", want)
		}
	}
	r := iamdb(t, env, "", "audit", "verify")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "OK: ") {
		t.Fatalf("audit verify after the restart: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	connected := map[uint32]bool{}
	var events []map[string]any
	out := must(t, iamdb(t, env, "", "audit", "query", "--event", "connect", "--output", "json"))
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var e struct {
			ErrorCode        string
			ResponseElements struct{ BackendPid uint32 }
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatal(err)
		}
		if e.ErrorCode == "" {
			connected[e.ResponseElements.BackendPid] = true
		}
		events = append(events, nil)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, pid := range established {
		if !connected[pid] {
			t.Fatalf("a session the client used (backend pid %d) has no connect event; %d sessions, %d connect events",
				pid, len(established), len(events))
		}
	}
	t.Logf("%d sessions established before the kill, %d connect events, log verified: %s", len(established), len(events), strings.TrimSpace(r.stdout))
}
