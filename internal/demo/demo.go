package demo

import (
	"bytes"
	"context"
	"database/sql"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"

	"github.com/iamdb/iamdb/internal/testdb"
)

// Identities is the identities file the demo applies; examples/identities.yaml
// is the same file.
//
//go:embed identities.yaml
var Identities []byte

// Options configures Run.
type Options struct {
	// Out receives the narration.
	Out io.Writer
	// Keep leaves everything running after the walkthrough, prints commands
	// to try, and waits for ctx to end (Ctrl-C) before cleaning up.
	Keep bool
	// Executable is the iamdb binary that runs every iamdb command shown.
	Executable string
}

// Names and ids the walkthrough uses.
const (
	region       = "us-east-1"
	pgInstance   = "orders"
	pgResourceID = "db-ORDERS00000000000000000000"
	myInstance   = "shop"
	myResourceID = "db-SHOP0000000000000000000000"
	caBundle     = "data/ca-bundle.pem" // relative to the working directory
	carol        = "carol@example.com"  // the federated person
)

// demo is one run of the walkthrough and everything it started.
type demo struct {
	opt   Options
	n     *narrator
	tools tools
	dir   string   // working directory
	env   []string // environment of every command

	pg    *testdb.PG
	maria *testdb.MariaDBServer

	pgPort, myPort, apiPort, metricsPort int // iamdb's listeners

	serve     *exec.Cmd
	serveDone chan struct{}
	serveErr  error

	account    string
	carolToken string // the ID token the demo's identity provider issued
}

// Run runs the walkthrough and cleans up everything it started, also when
// a step fails or ctx ends (Ctrl-C). With Keep, it waits for ctx to end
// after the last step; the end of ctx is then the normal way out and Run
// returns nil.
func Run(ctx context.Context, opt Options) (err error) {
	if opt.Out == nil {
		opt.Out = io.Discard
	}
	if opt.Executable == "" {
		return errors.New("demo: the path of the iamdb binary is required")
	}
	t, err := findTools()
	if err != nil {
		return err
	}
	d := &demo{opt: opt, n: &narrator{w: opt.Out}, tools: t}
	if d.dir, err = makeWorkDir(); err != nil {
		return err
	}
	defer func() {
		cerr := d.cleanup()
		switch {
		case err != nil && ctx.Err() != nil && cerr != nil:
			err = fmt.Errorf("interrupted, and cleaning up failed: %w", cerr)
		case err != nil && ctx.Err() != nil:
			err = errors.New("interrupted; everything the demo started has been stopped and removed")
		default:
			err = errors.Join(err, cerr)
		}
	}()

	fmt.Fprintf(opt.Out, "iamdb demo: IAM database authentication on throwaway databases.\n"+
		"Working directory %s (removed at the end). Databases you run yourself are not touched.\n", d.dir)
	for _, step := range []func(context.Context) error{
		d.startDatabases,
		d.configure,
		d.initDataDir,
		d.applyIdentities,
		d.createDatabaseUsers,
		d.startServe,
		d.accessKey,
		d.postgresWithAWSCLI,
		d.mariadbWithIamdbToken,
		d.federated,
		d.refusal,
		d.auditTrail,
	} {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := step(ctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("step %d: %w", d.n.step, err)
		}
	}
	if opt.Keep {
		d.printKeep()
		<-ctx.Done()
		fmt.Fprintln(opt.Out)
		return nil
	}
	return nil
}

// ---------------------------------------------------------------- steps

func (d *demo) startDatabases(ctx context.Context) error {
	d.n.begin("Start a throwaway PostgreSQL and MariaDB")
	d.n.say("From this machine's own binaries, in private directories under %s, on free ports.", os.TempDir())
	type started struct {
		pg    *testdb.PG
		maria *testdb.MariaDBServer
		err   error
	}
	pgc, myc := make(chan started, 1), make(chan started, 1)
	go func() {
		pg, err := testdb.StartPostgres(ctx, testdb.PGOptions{TLS: true})
		pgc <- started{pg: pg, err: err}
	}()
	go func() {
		m, err := testdb.StartMariaDB(ctx, testdb.MariaDBOptions{TLS: true})
		myc <- started{maria: m, err: err}
	}()
	p, m := <-pgc, <-myc
	d.pg, d.maria = p.pg, m.maria // cleanup stops whichever started
	if err := errors.Join(p.err, m.err); err != nil {
		if errors.Is(err, testdb.ErrNotInstalled) {
			return fmt.Errorf("%w (run scripts/deps.sh, or make demo, which runs it)", err)
		}
		return err
	}
	pgVersion, err := postgresVersion(ctx, d.pg)
	if err != nil {
		return err
	}
	myVersion, err := mariadbVersion(ctx, d.maria)
	if err != nil {
		return err
	}
	d.n.say("PostgreSQL %s on %s (superuser postgres; initdb and postgres from %s)", pgVersion, d.pg.Addr(), d.pg.BinDir)
	d.n.say("MariaDB %s on %s (admin root)", myVersion, d.maria.Addr())
	d.n.say("Both have TLS on; iamdb will verify their certificates. Their admin passwords are in env.sh.")
	return nil
}

func (d *demo) configure(ctx context.Context) error {
	ports, err := freePorts(4)
	if err != nil {
		return err
	}
	d.pgPort, d.myPort, d.apiPort, d.metricsPort = ports[0], ports[1], ports[2], ports[3]
	if err := os.Mkdir(filepath.Join(d.dir, "aws"), 0o700); err != nil {
		return fmt.Errorf("create the AWS configuration directory: %w", err)
	}
	if err := writeFile(filepath.Join(d.dir, "aws", "config"), "[default]\nregion = "+region+"\n"); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(d.dir, "aws", "credentials"), ""); err != nil {
		return err
	}
	exeDir := filepath.Dir(d.opt.Executable)
	vars := [][2]string{
		{"PATH", exeDir + string(os.PathListSeparator) + os.Getenv("PATH")},
		{"IAMDB_CONFIG", filepath.Join(d.dir, "iamdb.yaml")},
		{"AWS_CONFIG_FILE", filepath.Join(d.dir, "aws", "config")},
		{"AWS_SHARED_CREDENTIALS_FILE", filepath.Join(d.dir, "aws", "credentials")},
		{"AWS_REGION", region},
		{"AWS_DEFAULT_REGION", region},
		{"AWS_EC2_METADATA_DISABLED", "true"},
		{"AWS_PAGER", ""},
		{"IAMDB_PG_ADMIN_PASSWORD", d.pg.Password},
		{"IAMDB_MARIADB_ADMIN_PASSWORD", d.maria.RootPassword},
	}
	var sh strings.Builder
	sh.WriteString("# The environment of the commands `iamdb demo` shows. Source it:\n#   cd " + d.dir + " && . ./env.sh\n")
	d.env = baseEnv()
	for _, v := range vars {
		d.env = append(d.env, v[0]+"="+v[1])
		value := shellQuote(v[1])
		if v[0] == "PATH" {
			value = shellQuote(exeDir) + `:"$PATH"`
		}
		fmt.Fprintf(&sh, "export %s=%s\n", v[0], value)
	}
	// Commands run by the demo (not the shell of env.sh) ignore the user's
	// psql start-up file, which could change how results look.
	d.env = append(d.env, "PSQLRC=/dev/null")
	if err := writeFile(filepath.Join(d.dir, "env.sh"), sh.String()); err != nil {
		return err
	}

	d.n.begin("Configure iamdb: one instance in front of each database")
	d.n.say("Every command below runs in %s with the environment of env.sh\n"+
		"(IAMDB_CONFIG=iamdb.yaml, AWS_CONFIG_FILE and AWS_SHARED_CREDENTIALS_FILE in aws/, region %s).", d.dir, region)
	cfg := fmt.Sprintf(`# iamdb configuration (docs/configuration.md)
data_dir: ./data
region: %[1]s
api: {listen: "127.0.0.1:%[2]d"}      # STS-compatible API
metrics: {listen: "127.0.0.1:%[3]d"}  # /metrics, /healthz, /readyz
drain_timeout: 2s
instances:
  - name: %[4]s
    engine: postgres
    resource_id: %[5]s
    listen: "127.0.0.1:%[6]d"
    upstream: {address: "%[7]s", tls: verify-full, ca: "%[8]s"}
    backend_auth:
      mode: managed                    # iamdb sets and rotates database passwords
      admin_user: postgres
      admin_password_env: IAMDB_PG_ADMIN_PASSWORD
  - name: %[9]s
    engine: mysql                      # MySQL and MariaDB
    resource_id: %[10]s
    listen: "127.0.0.1:%[11]d"
    upstream: {address: "%[12]s", tls: verify-full, ca: "%[13]s"}
    backend_auth:
      mode: managed
      admin_user: root
      admin_password_env: IAMDB_MARIADB_ADMIN_PASSWORD
    iam_users: [alice, app]            # MySQL has no rds_iam role: these log in with tokens
`, region, d.apiPort, d.metricsPort,
		pgInstance, pgResourceID, d.pgPort, d.pg.Addr(), d.pg.CAFile,
		myInstance, myResourceID, d.myPort, d.maria.Addr(), d.maria.CAFile)
	if err := writeFile(filepath.Join(d.dir, "iamdb.yaml"), cfg); err != nil {
		return err
	}
	d.n.command("cat iamdb.yaml")
	d.n.output(cfg)
	return nil
}

func (d *demo) initDataDir(ctx context.Context) error {
	d.n.begin("Create the data directory: master key, CA, account, admin key")
	_, err := d.show(ctx, "iamdb init", d.iamdb(ctx, "init"), 0)
	if err != nil {
		return err
	}
	// The account id, for the ARNs the later steps show.
	arn, err := d.capture(ctx, d.iamdb(ctx, "user", "get", "admin", "--output", "json"))
	if err != nil {
		return err
	}
	var u struct{ User struct{ Arn string } }
	if err := json.Unmarshal([]byte(arn), &u); err != nil {
		return fmt.Errorf("read the admin user: %w", err)
	}
	parts := strings.Split(u.User.Arn, ":")
	if len(parts) < 5 {
		return fmt.Errorf("unexpected admin ARN %q", u.User.Arn)
	}
	d.account = parts[4]
	return nil
}

func (d *demo) applyIdentities(ctx context.Context) error {
	d.n.begin("Declare identities: a user, a federated role with tags, policies")
	if err := writeFile(filepath.Join(d.dir, "identities.yaml"), string(Identities)); err != nil {
		return err
	}
	idp, err := newDemoIdP()
	if err != nil {
		return err
	}
	jwks, err := idp.jwks()
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(d.dir, "idp-jwks.json"), string(jwks)+"\n"); err != nil {
		return err
	}
	carolToken, err := idp.idToken(idClaims{Subject: carol, Email: carol, DBUser: "app"}, time.Now())
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(d.dir, "carol.jwt"), carolToken); err != nil {
		return err
	}
	d.carolToken = carolToken
	d.n.say("identities.yaml (also in examples/); idp-jwks.json holds the public key of the identity\n" +
		"provider the demo plays in step 10.")
	d.n.command("cat identities.yaml")
	d.n.output(string(Identities))
	_, err = d.show(ctx, "iamdb apply -f identities.yaml", d.iamdb(ctx, "apply", "-f", "identities.yaml"), 0)
	return err
}

func (d *demo) createDatabaseUsers(ctx context.Context) error {
	d.n.begin("Create the database users, as on Amazon RDS")
	d.n.say("PostgreSQL: members of role rds_iam log in with tokens; iamdb db setup creates the role.")
	if _, err := d.show(ctx, "iamdb db setup --instance "+pgInstance, d.iamdb(ctx, "db", "setup", "--instance", pgInstance), 0); err != nil {
		return err
	}
	// Two -c: CREATE DATABASE cannot share a transaction with the rest.
	pgArgs := []string{fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres", d.pg.Port), "-v", "ON_ERROR_STOP=1",
		"-c", "CREATE DATABASE orders", "-c", "CREATE USER alice; CREATE USER app; GRANT rds_iam TO alice, app;"}
	psql := d.cmd(ctx, []string{"PGPASSWORD=" + d.pg.Password}, d.tools.psql, pgArgs...)
	if _, err := d.show(ctx, `PGPASSWORD="$IAMDB_PG_ADMIN_PASSWORD" `+shellLine(append([]string{"psql"}, pgArgs...)...), psql, 0); err != nil {
		return err
	}
	d.n.say("MariaDB: users without a password; iam_users in iamdb.yaml makes them IAM users.")
	mySQL := "CREATE DATABASE shop; CREATE USER alice@'%'; CREATE USER app@'%'; GRANT ALL ON shop.* TO alice@'%', app@'%';"
	myArgs := []string{"--host=127.0.0.1", fmt.Sprintf("--port=%d", d.maria.Port), "--user=root", "-e", mySQL}
	mariadb := d.cmd(ctx, []string{"MYSQL_PWD=" + d.maria.RootPassword}, d.tools.mariadb, myArgs...)
	_, err := d.show(ctx, `MYSQL_PWD="$IAMDB_MARIADB_ADMIN_PASSWORD" `+shellLine(append([]string{"mariadb"}, myArgs...)...), mariadb, 0)
	return err
}

func (d *demo) startServe(ctx context.Context) error {
	d.n.begin("Start iamdb")
	d.n.command("iamdb serve > serve.log 2>&1 &")
	logf, err := os.OpenFile(filepath.Join(d.dir, "serve.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("create serve.log: %w", err)
	}
	defer logf.Close() // the child has its own descriptor
	c := exec.Command(d.opt.Executable, "serve")
	c.Dir, c.Env = d.dir, d.env
	c.Stdout, c.Stderr = logf, logf
	// Its own process group: a Ctrl-C in the terminal reaches the demo,
	// which then stops iamdb serve in order. The parent-death signal ends it
	// should the demo be killed outright.
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := c.Start(); err != nil {
		return fmt.Errorf("start iamdb serve: %w", err)
	}
	d.serve, d.serveDone = c, make(chan struct{})
	go func() {
		d.serveErr = c.Wait()
		close(d.serveDone)
	}()
	readyz := fmt.Sprintf("http://127.0.0.1:%d/readyz", d.metricsPort)
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-d.serveDone:
			return fmt.Errorf("iamdb serve exited at start (%v):\n%s", d.serveErr, tail(filepath.Join(d.dir, "serve.log")))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if httpStatus(ctx, readyz) == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("iamdb serve was not ready within 30s:\n%s", tail(filepath.Join(d.dir, "serve.log")))
		}
	}
	d.n.say("PostgreSQL listener 127.0.0.1:%d (instance %s), MySQL listener 127.0.0.1:%d (instance %s),\n"+
		"STS-compatible API http://127.0.0.1:%d, metrics and health http://127.0.0.1:%d (/readyz says 200).",
		d.pgPort, pgInstance, d.myPort, myInstance, d.apiPort, d.metricsPort)
	return nil
}

func (d *demo) accessKey(ctx context.Context) error {
	d.n.begin("Give alice an access key")
	out, err := d.show(ctx, "iamdb access-key create --user alice", d.iamdb(ctx, "access-key", "create", "--user", "alice"), 0)
	if err != nil {
		return err
	}
	var k struct {
		AccessKey struct{ AccessKeyId, SecretAccessKey string }
	}
	if err := json.Unmarshal([]byte(out), &k); err != nil || k.AccessKey.SecretAccessKey == "" {
		return fmt.Errorf("read alice's access key from iamdb access-key create: %v", err)
	}
	if err := d.addProfile("alice", k.AccessKey.AccessKeyId, k.AccessKey.SecretAccessKey, ""); err != nil {
		return err
	}
	d.n.say("Saved as AWS profile alice in aws/credentials, as `aws configure --profile alice` would.")
	return nil
}

func (d *demo) postgresWithAWSCLI(ctx context.Context) error {
	d.n.begin("alice connects to PostgreSQL: a token from the AWS CLI, psql")
	d.n.say("The token is the password; TLS is required and psql verifies iamdb's certificate.")
	token, err := d.awsToken(ctx, "alice", d.pgPort, "alice")
	if err != nil {
		return err
	}
	_, err = d.psql(ctx, "alice", "orders", token, "select current_user, current_database()", 0)
	return err
}

func (d *demo) mariadbWithIamdbToken(ctx context.Context) error {
	d.n.begin("alice connects to MariaDB: a token from iamdb token, the mariadb client")
	d.n.say("iamdb token takes the AWS CLI's flags and prints the same token; mariadb sends it with the\n" +
		"cleartext plugin inside TLS, as with RDS.")
	token, err := d.iamdbToken(ctx, "alice", d.myPort, "alice")
	if err != nil {
		return err
	}
	args := []string{"--host=127.0.0.1", fmt.Sprintf("--port=%d", d.myPort), "--user=alice", "--database=shop",
		"--ssl", "--ssl-ca=" + caBundle, "--ssl-verify-server-cert", "--table", "-e", "select current_user(), database()"}
	c := d.cmd(ctx, []string{"MYSQL_PWD=" + token}, d.tools.mariadb, args...)
	_, err = d.show(ctx, shellLine(append([]string{"mariadb"}, args...)...), c, 0)
	return err
}

func (d *demo) federated(ctx context.Context) error {
	d.n.begin("carol signs in at the identity provider and connects as the shared user app")
	d.n.say("The identity provider (played by the demo) gave carol an ID token, in carol.jwt. Its claims:")
	claims, err := jwtClaims(d.carolToken)
	if err != nil {
		return err
	}
	d.n.output(claims)
	endpoint := fmt.Sprintf("http://127.0.0.1:%d", d.apiPort)
	roleARN := "arn:aws:iam::" + d.account + ":role/analysts"
	args := []string{"sts", "assume-role-with-web-identity", "--endpoint-url", endpoint, "--role-arn", roleARN,
		"--role-session-name", "carol", "--web-identity-token", "file://carol.jwt"}
	out, err := d.show(ctx, shellLine(append([]string{"aws"}, args...)...), d.cmd(ctx, nil, d.tools.aws, args...), 0)
	if err != nil {
		return err
	}
	var assumed struct {
		Credentials struct{ AccessKeyId, SecretAccessKey, SessionToken string }
	}
	if err := json.Unmarshal([]byte(out), &assumed); err != nil || assumed.Credentials.SessionToken == "" {
		return fmt.Errorf("read carol's credentials from aws sts assume-role-with-web-identity: %v", err)
	}
	c := assumed.Credentials
	if err := d.addProfile("carol", c.AccessKeyId, c.SecretAccessKey, c.SessionToken); err != nil {
		return err
	}
	d.n.say("Saved as AWS profile carol. Who is that?")
	args = []string{"--profile", "carol", "sts", "get-caller-identity", "--endpoint-url", endpoint}
	if _, err := d.show(ctx, shellLine(append([]string{"aws"}, args...)...), d.cmd(ctx, nil, d.tools.aws, args...), 0); err != nil {
		return err
	}
	d.n.say("The role's policy allows dbuser:*/${aws:PrincipalTag/dbuser}, and carol's session has dbuser=app:")
	token, err := d.iamdbToken(ctx, "carol", d.pgPort, "app")
	if err != nil {
		return err
	}
	_, err = d.psql(ctx, "app", "orders", token, "select current_user, session_user", 0)
	return err
}

func (d *demo) refusal(ctx context.Context) error {
	d.n.begin("A refusal, and why")
	d.n.say("alice's policy allows the database user named like her (${aws:username}), not app.\n" +
		"iamdb token verify makes every check a listener makes and names the one that fails:")
	tokenArgs := []string{"token", "--profile", "alice", "--hostname", "127.0.0.1", "--port", strconv.Itoa(d.pgPort),
		"--username", "app", "--region", region}
	token, err := d.capture(ctx, d.iamdb(ctx, tokenArgs...))
	if err != nil {
		return err
	}
	verifyArgs := []string{"token", "verify", "--token", "-", "--hostname", "127.0.0.1", "--port", strconv.Itoa(d.pgPort), "--username", "app"}
	verify := d.iamdb(ctx, verifyArgs...)
	verify.Stdin = strings.NewReader(token + "\n")
	if _, err := d.show(ctx, shellLine(append([]string{"iamdb"}, tokenArgs...)...)+" | "+shellLine(append([]string{"iamdb"}, verifyArgs...)...), verify, 1); err != nil {
		return err
	}
	d.n.say("The listener refuses the login the same way. The client is only told that it failed (as with\nRDS); the audit trail (step 12) and iamdb's log say why.")
	_, err = d.psql(ctx, "app", "orders", token, "select 1", 2, "iamdb token --profile alice")
	return err
}

func (d *demo) auditTrail(ctx context.Context) error {
	d.n.begin("The audit trail: who connected, as which database user, and what was refused")
	if _, err := d.show(ctx, "iamdb audit query --event connect", d.iamdb(ctx, "audit", "query", "--event", "connect"), 0); err != nil {
		return err
	}
	d.n.say("carol's login as app, in full (CloudTrail-shaped; the federated person, the role session, its tags):")
	raw, err := d.capture(ctx, d.iamdb(ctx, "audit", "query", "--user", carol, "--event", "connect", "--output", "json"))
	if err != nil {
		return err
	}
	d.n.command(shellLine("iamdb", "audit", "query", "--user", carol, "--event", "connect", "--output", "json"))
	first, _, _ := strings.Cut(raw, "\n")
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, []byte(first), "", "  "); err != nil {
		return fmt.Errorf("no audit event of carol's login (%v): %q", err, first)
	}
	d.n.output(pretty.String())
	d.n.say("The chain of hashes over all events shows that none was edited, removed or reordered:")
	_, err = d.show(ctx, "iamdb audit verify", d.iamdb(ctx, "audit", "verify"), 0)
	return err
}

func (d *demo) printKeep() {
	fmt.Fprintf(d.opt.Out, `
Everything is still running. Try it in another terminal:

    cd %[1]s && . ./env.sh
    iamdb connect postgres --instance %[2]s --user alice --database orders --profile alice
    iamdb connect mysql --instance %[3]s --user alice --database shop --profile alice
    export PGPASSWORD="$(aws --profile alice rds generate-db-auth-token --hostname 127.0.0.1 --port %[4]d --username alice --region %[5]s)"
    psql "host=127.0.0.1 port=%[4]d user=alice dbname=orders sslmode=verify-full sslrootcert=%[6]s"
    aws --profile alice sts get-caller-identity --endpoint-url http://127.0.0.1:%[7]d
    iamdb policy simulate --principal arn:aws:iam::%[8]s:user/alice --resource arn:aws:rds-db:%[5]s:%[8]s:dbuser:%[9]s/app
    iamdb audit tail -f
    curl -s http://127.0.0.1:%[10]d/metrics | grep '^iamdb_'
    tail -f serve.log

carol's credentials (profile carol) last an hour.
Press Ctrl-C here to stop everything and remove %[1]s.
`, d.dir, pgInstance, myInstance, d.pgPort, region, caBundle, d.apiPort, d.account, pgResourceID, d.metricsPort)
}

// ---------------------------------------------------------------- cleanup

// cleanup stops iamdb serve and the databases and removes the working
// directory. It runs whatever happened before, so every part copes with
// never having been started.
func (d *demo) cleanup() error {
	var errs []error
	var done []string
	if d.serve != nil {
		d.serve.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.serveDone:
		case <-time.After(15 * time.Second):
			syscall.Kill(-d.serve.Process.Pid, syscall.SIGKILL)
			<-d.serveDone
			errs = append(errs, errors.New("iamdb serve did not stop within 15s of SIGTERM; killed it"))
		}
		done = append(done, "iamdb serve")
	}
	if d.pg != nil {
		if err := d.pg.Stop(); err != nil {
			errs = append(errs, err)
		}
		done = append(done, "PostgreSQL")
	}
	if d.maria != nil {
		if err := d.maria.Stop(); err != nil {
			errs = append(errs, err)
		}
		done = append(done, "MariaDB")
	}
	if err := os.RemoveAll(d.dir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", d.dir, err))
	}
	d.n.begin("Clean up")
	if len(done) > 0 {
		d.n.say("Stopped %s; removed their directories and %s.", strings.Join(done, ", "), d.dir)
	} else {
		d.n.say("Removed %s.", d.dir)
	}
	return errors.Join(errs...)
}

// ---------------------------------------------------------------- commands

// cmd builds a command that runs in the working directory with the demo's
// environment plus extra.
func (d *demo) cmd(ctx context.Context, extra []string, path string, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, path, args...)
	c.Dir = d.dir
	c.Env = append(append([]string(nil), d.env...), extra...)
	c.WaitDelay = 5 * time.Second
	return c
}

// iamdb is a command running this iamdb binary.
func (d *demo) iamdb(ctx context.Context, args ...string) *exec.Cmd {
	return d.cmd(ctx, nil, d.opt.Executable, args...)
}

// show prints the command line as typed, runs c, prints its output (stdout
// and stderr as they interleave) and its exit status when not 0, and fails
// unless the exit status is want. It returns stdout.
func (d *demo) show(ctx context.Context, line string, c *exec.Cmd, want int) (string, error) {
	d.n.command(line)
	var stdout bytes.Buffer
	both := &syncBuffer{}
	c.Stdout = io.MultiWriter(&stdout, both)
	c.Stderr = both
	err := c.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		return "", fmt.Errorf("%s: %w", line, err)
	}
	d.n.output(both.String())
	if code != 0 {
		d.n.say("(exit status %d)", code)
	}
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	if code != want {
		return "", fmt.Errorf("%s: exit status %d, expected %d", line, code, want)
	}
	return stdout.String(), nil
}

// capture runs c without showing it and returns its standard output,
// trimmed. A failure carries the (redacted) standard error.
func (d *demo) capture(ctx context.Context, c *exec.Cmd) (string, error) {
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "", fmt.Errorf("%s: %w\n%s", shellLine(append([]string{filepath.Base(c.Path)}, c.Args[1:]...)...), err, redact(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// awsToken gets a token from the AWS CLI, showing the command as the
// assignment a person would write.
func (d *demo) awsToken(ctx context.Context, profile string, port int, dbUser string) (string, error) {
	args := []string{"--profile", profile, "rds", "generate-db-auth-token", "--hostname", "127.0.0.1",
		"--port", strconv.Itoa(port), "--username", dbUser, "--region", region}
	d.n.command(`export PGPASSWORD="$(` + shellLine(append([]string{"aws"}, args...)...) + `)"`)
	return d.capture(ctx, d.cmd(ctx, nil, d.tools.aws, args...))
}

// iamdbToken gets a token from iamdb token.
func (d *demo) iamdbToken(ctx context.Context, profile string, port int, dbUser string) (string, error) {
	args := []string{"token", "--profile", profile, "--hostname", "127.0.0.1", "--port", strconv.Itoa(port),
		"--username", dbUser, "--region", region}
	variable := "PGPASSWORD"
	if port == d.myPort {
		variable = "MYSQL_PWD"
	}
	d.n.command("export " + variable + `="$(` + shellLine(append([]string{"iamdb"}, args...)...) + `)"`)
	return d.capture(ctx, d.iamdb(ctx, args...))
}

// psql runs psql through iamdb's PostgreSQL listener with token as the
// password. shownToken, when given, is the command shown as the source of
// PGPASSWORD (when the demo did not show it already).
func (d *demo) psql(ctx context.Context, user, database, token, query string, want int, shownToken ...string) (string, error) {
	conninfo := fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=%s sslmode=verify-full sslrootcert=%s", d.pgPort, user, database, caBundle)
	if len(shownToken) > 0 {
		d.n.command(`export PGPASSWORD="$(` + shownToken[0] + ` --hostname 127.0.0.1 --port ` + strconv.Itoa(d.pgPort) +
			` --username ` + user + ` --region ` + region + `)"`)
	}
	c := d.cmd(ctx, []string{"PGPASSWORD=" + token}, d.tools.psql, conninfo, "-c", query)
	return d.show(ctx, shellLine("psql", conninfo, "-c", query), c, want)
}

// addProfile adds a profile to the demo's AWS credentials file.
func (d *demo) addProfile(name, keyID, secret, sessionToken string) error {
	f, err := os.OpenFile(filepath.Join(d.dir, "aws", "credentials"), os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open the AWS credentials file: %w", err)
	}
	defer f.Close()
	s := fmt.Sprintf("[%s]\naws_access_key_id = %s\naws_secret_access_key = %s\n", name, keyID, secret)
	if sessionToken != "" {
		s += "aws_session_token = " + sessionToken + "\n"
	}
	if _, err := f.WriteString(s); err != nil {
		return fmt.Errorf("write the AWS credentials file: %w", err)
	}
	return nil
}

// ---------------------------------------------------------------- helpers

// syncBuffer collects a command's stdout and stderr as they interleave.
// exec copies the two in separate goroutines, and a bare bytes.Buffer
// (whose ReadFrom exec would use for one of them) loses writes when both
// write at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func writeFile(path, content string) error {
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	return nil
}

func httpStatus(ctx context.Context, url string) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// tail is the end of a log file, for error messages.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	const max = 3000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return redact(string(b))
}

func postgresVersion(ctx context.Context, pg *testdb.PG) (string, error) {
	conn, err := pgx.Connect(ctx, pg.AdminDSN())
	if err != nil {
		return "", fmt.Errorf("connect to the demo's PostgreSQL: %w", err)
	}
	defer conn.Close(context.Background())
	var v string
	if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&v); err != nil {
		return "", fmt.Errorf("PostgreSQL version: %w", err)
	}
	v, _, _ = strings.Cut(v, " ")
	return v, nil
}

func mariadbVersion(ctx context.Context, m *testdb.MariaDBServer) (string, error) {
	cfg, err := mysql.ParseDSN(m.RootDSN())
	if err != nil {
		return "", fmt.Errorf("MariaDB DSN: %w", err)
	}
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return "", fmt.Errorf("MariaDB connector: %w", err)
	}
	db := sql.OpenDB(connector)
	defer db.Close()
	var v string
	if err := db.QueryRowContext(ctx, "SELECT VERSION()").Scan(&v); err != nil {
		return "", fmt.Errorf("connect to the demo's MariaDB: %w", err)
	}
	v, _, _ = strings.Cut(v, "-")
	return v, nil
}
