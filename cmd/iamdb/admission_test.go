package main_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/redis/go-redis/v9"

	"github.com/iamdb/iamdb/internal/sigv4"
	"github.com/iamdb/iamdb/internal/testdb"
)

// redisRelay stands where Redis is configured, so that the test can stop
// the real Redis and later put a fresh one behind the same address, as an
// operator restarting Redis would.
type redisRelay struct {
	ln     net.Listener
	mu     sync.Mutex
	target string
}

func newRedisRelay(t *testing.T, target string) *redisRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &redisRelay{ln: ln, target: target}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go r.relay(c)
		}
	}()
	return r
}

func (r *redisRelay) relay(c net.Conn) {
	defer c.Close()
	r.mu.Lock()
	target := r.target
	r.mu.Unlock()
	u, err := net.DialTimeout("tcp", target, time.Second)
	if err != nil {
		return
	}
	defer u.Close()
	go func() { io.Copy(u, c); u.Close() }()
	io.Copy(c, u)
}

func (r *redisRelay) point(target string) {
	r.mu.Lock()
	r.target = target
	r.mu.Unlock()
}

func startRedis(t *testing.T) *testdb.RedisServer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rd, err := testdb.StartRedis(ctx)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("Redis is required (run scripts/deps.sh): %v", err)
		}
		t.Skipf("Redis not available (run scripts/deps.sh): %v", err)
	}
	t.Cleanup(func() { rd.Stop() })
	return rd
}

// replicaProc is one `iamdb serve` process.
type replicaProc struct {
	name    string
	cfgPath string
	port    int
	metrics int
	cmd     *exec.Cmd
	logs    *lockedBuffer
	exited  chan error
}

func (r *replicaProc) metric(t *testing.T, name string) string {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", r.metrics))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, name+" ") {
			return strings.TrimPrefix(line, name+" ")
		}
	}
	return ""
}

// TestServeSharedLimits runs two `iamdb serve` replicas of one instance
// against one Redis: max_connections holds across both, the connections
// of a replica that dies stop counting, and when Redis stops each replica
// falls back to its own limits (logged once), or refuses logins once
// reconfigured with redis_failure: refuse, until a Redis answers again.
func TestServeSharedLimits(t *testing.T) {
	pg := startPostgres(t)
	rd1 := startRedis(t)
	relay := newRedisRelay(t, rd1.Addr)
	ctx := context.Background()

	appPassword := "app-" + fmt.Sprint(time.Now().UnixNano())
	admin, err := pgx.Connect(ctx, pg.AdminDSN())
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{
		"CREATE ROLE rds_iam NOLOGIN",
		"CREATE USER app PASSWORD '" + appPassword + "'",
		"GRANT rds_iam TO app",
		"CREATE DATABASE orders OWNER app",
	} {
		if _, err := admin.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	admin.Close(ctx)

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "secrets.yaml"), []byte("app: "+appPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := &replicaProc{name: "a", port: freeLoopbackPort(t), metrics: freeLoopbackPort(t), logs: &lockedBuffer{}}
	b := &replicaProc{name: "b", port: freeLoopbackPort(t), metrics: freeLoopbackPort(t), logs: &lockedBuffer{}}
	// One token works on both replicas: each lists both addresses as
	// endpoints, as replicas behind one DNS name would.
	endpoints := fmt.Sprintf(`["127.0.0.1:%d", "127.0.0.1:%d"]`, a.port, b.port)
	writeConfig := func(r *replicaProc, redisFailure string) {
		t.Helper()
		r.cfgPath = filepath.Join(dir, r.name+".yaml")
		cfg := fmt.Sprintf(`data_dir: ./data
region: us-east-1
metrics: {listen: "127.0.0.1:%d"}
api: {listen: "127.0.0.1:%d"}
redis: "redis://%s/0"
redis_failure: %s
drain_timeout: 2s
instances:
  - name: orders
    engine: postgres
    resource_id: db-SERVE000000000000000000000
    listen: 127.0.0.1:%d
    endpoints: %s
    upstream: {address: "%s", tls: verify-full, ca: "%s"}
    backend_auth: {mode: secrets, secrets_file: secrets.yaml}
    iam_users: [app]
    limits: {max_connections: 3}
`, r.metrics, freeLoopbackPort(t), relay.ln.Addr(), redisFailure, r.port, endpoints, pg.Addr(), pg.CAFile)
		if err := os.WriteFile(r.cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig(a, "local")
	writeConfig(b, "local")
	env := []string{"IAMDB_CONFIG=" + a.cfgPath}
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
	token, err := sigv4.Sign(sigv4.SignInput{Endpoint: fmt.Sprintf("127.0.0.1:%d", a.port), Region: "us-east-1", DBUser: "app",
		AccessKeyID: key.AccessKey.AccessKeyId, SecretAccessKey: key.AccessKey.SecretAccessKey, Time: time.Now()})
	if err != nil {
		t.Fatal(err)
	}

	start := func(r *replicaProc) {
		t.Helper()
		r.cmd = exec.Command(bin, "serve", "--config", r.cfgPath)
		r.cmd.Env = cleanEnv(t)
		r.cmd.Stdout, r.cmd.Stderr = r.logs, r.logs
		if err := r.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		r.exited = make(chan error, 1)
		go func() { r.exited <- r.cmd.Wait() }()
		t.Cleanup(func() {
			select {
			case <-r.exited:
			default:
				r.cmd.Process.Kill()
				<-r.exited
			}
			if t.Failed() {
				t.Logf("replica %s output:\n%s", r.name, r.logs)
			}
		})
		waitUntil(t, "replica "+r.name+" to be ready", func() bool {
			select {
			case err := <-r.exited:
				r.exited <- err
				t.Fatalf("replica %s exited at start: %v\n%s", r.name, err, r.logs)
			default:
			}
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", r.metrics))
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		})
	}
	start(a)
	start(b)

	var open []*pgx.Conn
	defer func() {
		for _, c := range open {
			c.Close(ctx)
		}
	}()
	connect := func(r *replicaProc) (*pgx.Conn, error) {
		cfg, err := pgx.ParseConfig(fmt.Sprintf("host=127.0.0.1 port=%d user=app dbname=orders sslmode=verify-full sslrootcert=%s connect_timeout=20", r.port, caBundle))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Password = token
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err == nil {
			open = append(open, c)
		}
		return c, err
	}
	// refusedBy asserts a refusal with 53300 whose message contains want.
	refusedBy := func(r *replicaProc, want string) {
		t.Helper()
		_, err := connect(r)
		if err == nil {
			t.Fatalf("replica %s admitted a connection, want a refusal naming %q", r.name, want)
		}
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "53300" || !strings.Contains(pe.Message, want) {
			t.Fatalf("replica %s: %v, want 53300 naming %q", r.name, err, want)
		}
	}
	closeConn := func(c *pgx.Conn) {
		c.Close(ctx)
		for i, o := range open {
			if o == c {
				open = append(open[:i], open[i+1:]...)
				break
			}
		}
	}
	// eventually retries a connection that is refused until a release or
	// a lapsed heartbeat has made room.
	eventually := func(r *replicaProc, what string) *pgx.Conn {
		t.Helper()
		var c *pgx.Conn
		waitUntil(t, what, func() bool {
			var err error
			c, err = connect(r)
			return err == nil
		})
		return c
	}

	// max_connections 3 across both replicas.
	a1, err := connect(a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := connect(a); err != nil {
		t.Fatal(err)
	}
	if _, err := connect(b); err != nil {
		t.Fatal(err)
	}
	refusedBy(b, "max_connections 3 reached")
	refusedBy(a, "max_connections 3 reached")

	closeConn(a1)
	eventually(b, "replica b to get the slot replica a released")
	refusedBy(b, "max_connections 3 reached")

	// Replica a dies holding a connection: it stops counting once a's
	// heartbeat lapses.
	a.cmd.Process.Signal(syscall.SIGKILL)
	<-a.exited
	a.exited <- nil
	eventually(b, "the dead replica's connection to stop counting")
	refusedBy(b, "max_connections 3 reached")
	if v := b.metric(t, "iamdb_admission_redis_fallback"); v != "0" {
		t.Fatalf("fallback metric %q with Redis up", v)
	}

	// Redis stops: b falls back to its own limits, which still hold.
	if err := rd1.Stop(); err != nil {
		t.Fatal(err)
	}
	refusedBy(b, "max_connections 3 reached")
	closeConn(open[len(open)-1])
	eventually(b, "a local slot after a release with Redis down")
	refusedBy(b, "max_connections 3 reached")
	if n := strings.Count(b.logs.String(), "Redis is unreachable"); n != 1 {
		t.Fatalf("the fallback was logged %d times, want once:\n%s", n, b.logs)
	}
	if v := b.metric(t, "iamdb_admission_redis_fallback"); v != "1" {
		t.Fatalf("fallback metric %q with Redis down", v)
	}

	// Fail closed instead: reconfigured and reloaded, b refuses every new
	// connection while Redis is down.
	closeConn(open[len(open)-1])
	writeConfig(b, "refuse")
	before := strings.Count(b.logs.String(), "reload done")
	b.cmd.Process.Signal(syscall.SIGHUP)
	waitUntil(t, "the reload", func() bool { return strings.Count(b.logs.String(), "reload done") > before })
	refusedBy(b, "redis_failure is refuse")

	// A Redis answers again (a fresh one: nothing survived): b shares its
	// limits again and rewrites its connections there.
	rd2 := startRedis(t)
	relay.point(rd2.Addr)
	eventually(b, "logins once Redis answers again")
	if !strings.Contains(b.logs.String(), "Redis answers again") {
		t.Fatalf("the recovery was not logged:\n%s", b.logs)
	}
	refusedBy(b, "max_connections 3 reached")
	rc := redis.NewClient(&redis.Options{Addr: rd2.Addr})
	defer rc.Close()
	vals, err := rc.HVals(ctx, "iamdb:admission:orders:connections").Result()
	if err != nil || len(vals) != 1 || vals[0] != "3" {
		t.Fatalf("connections in the new Redis: %v %v, want b's 3", vals, err)
	}
	if v := b.metric(t, `iamdb_admission_throttled_total{instance="orders",limit="max_connections"}`); v == "" || v == "0" {
		t.Fatalf("throttled metric %q", v)
	}

	b.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-b.exited; err != nil {
		t.Fatalf("replica b after SIGTERM: %v", err)
	}
	b.exited <- nil
	for _, secret := range []string{appPassword, key.AccessKey.SecretAccessKey, token} {
		if strings.Contains(a.logs.String()+b.logs.String(), secret) {
			t.Fatal("a replica logged a secret")
		}
	}
}
