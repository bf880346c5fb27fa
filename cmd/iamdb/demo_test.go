package main_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// demoUnavailable ends a demo test whose programs or servers this machine
// lacks: a skip outside CI, a failure in CI, where scripts/deps.sh must
// have installed them.
func demoUnavailable(t *testing.T, out string) {
	t.Helper()
	if !strings.Contains(out, "these are missing:") && !strings.Contains(out, "not installed") {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("iamdb demo lacks a dependency in CI (scripts/deps.sh installs them all):\n%s", out)
	}
	t.Skipf("iamdb demo cannot run here (run scripts/deps.sh):\n%s", out)
}

// demoFacts are what a demo's narration says about what it started.
type demoFacts struct {
	dir                  string
	pgPort, upstreamPort string // iamdb's PostgreSQL listener, the throwaway PostgreSQL
}

func parseDemo(t *testing.T, out string) demoFacts {
	t.Helper()
	var f demoFacts
	if m := regexp.MustCompile(`Working directory (\S+) `).FindStringSubmatch(out); m != nil {
		f.dir = m[1]
	}
	if m := regexp.MustCompile(`PostgreSQL listener 127\.0\.0\.1:(\d+)`).FindStringSubmatch(out); m != nil {
		f.pgPort = m[1]
	}
	if m := regexp.MustCompile(`PostgreSQL [0-9.]+ on 127\.0\.0\.1:(\d+)`).FindStringSubmatch(out); m != nil {
		f.upstreamPort = m[1]
	}
	if f.dir == "" || !strings.HasPrefix(filepath.Base(f.dir), "iamdb-demo-") {
		t.Fatalf("no working directory in the narration:\n%s", out)
	}
	return f
}

// assertCleanedUp checks that nothing the demo started outlived it: its
// working directory, iamdb's listener, the throwaway PostgreSQL.
func assertCleanedUp(t *testing.T, f demoFacts) {
	t.Helper()
	if _, err := os.Stat(f.dir); !os.IsNotExist(err) {
		t.Errorf("working directory %s still exists (%v)", f.dir, err)
	}
	for what, port := range map[string]string{"iamdb's PostgreSQL listener": f.pgPort, "the throwaway PostgreSQL": f.upstreamPort} {
		if port == "" {
			continue
		}
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, time.Second); err == nil {
			c.Close()
			t.Errorf("%s (port %s) still accepts connections after the demo ended", what, port)
		}
	}
}

// TestDemo runs `iamdb demo` as `make demo` does and checks what it shows:
// real logins with psql and mariadb, the federated person connecting as the
// shared user, a refusal with its reason, the audit trail; no secret on
// screen; nothing left behind.
func TestDemo(t *testing.T) {
	cmd := exec.Command(bin, "demo")
	cmd.Env = cleanEnv(t)
	outb, err := cmd.CombinedOutput()
	out := string(outb)
	if err != nil {
		demoUnavailable(t, out)
		t.Fatalf("iamdb demo: %v\n%s", err, out)
	}
	f := parseDemo(t, out)

	for _, want := range []struct{ what, re string }{
		{"13 numbered steps", `(?m)^13\. Clean up$`},
		{"psql as alice through iamdb, token from the AWS CLI", `(?s)aws --profile alice rds generate-db-auth-token.*?\n\s+alice\s+\|\s+orders\n`},
		{"mariadb as alice, token from iamdb token", `(?s)iamdb token --profile alice .*?--port \d+ --username alice.*?\|\s+alice@%\s+\|\s+shop\s+\|`},
		{"carol's federated session", `"Arn": "arn:aws:sts::\d{12}:assumed-role/analysts/carol"`},
		{"psql as the shared user app for carol", `(?s)iamdb token --profile carol .*?--username app.*?\n\s+app\s+\|\s+app\n`},
		{"the refusal's reason from token verify", `Result: REFUSED \(AccessDenied \(implicitDeny\)\)`},
		{"the refused login", `PAM authentication failed for user "app"`},
		{"alice's login in the audit trail", `connect\s+arn:aws:iam::\d{12}:user/alice\s+orders\s+alice\s+127\.0\.0\.1\s+ok`},
		{"carol's login in the audit trail", `connect\s+arn:aws:sts::\d{12}:assumed-role/analysts/carol\s+orders\s+app\s+127\.0\.0\.1\s+ok`},
		{"the refusal in the audit trail", `connect\s+arn:aws:iam::\d{12}:user/alice\s+orders\s+app\s+127\.0\.0\.1\s+AccessDenied: implicitDeny`},
		{"the federated subject in the event", `"sub": "carol@example.com"`},
		{"the session tag in the event", `"dbuser": "app"`},
		{"the audit chain verified", `OK: \d+ events in 1 file`},
		{"cleanup", `Stopped iamdb serve, PostgreSQL, MariaDB`},
	} {
		if !regexp.MustCompile(want.re).MatchString(out) {
			t.Errorf("the narration lacks %s (/%s/)", want.what, want.re)
		}
	}
	// Secrets: the commands print the admin's and alice's secret keys and
	// carol's session credentials; the demo must hide every one.
	if strings.Contains(out, "X-Amz-Signature=") {
		t.Error("the demo printed a token")
	}
	for _, re := range []string{`"SecretAccessKey": "([^"]*)"`, `"SessionToken": "([^"]*)"`, `AWS_SECRET_ACCESS_KEY=(\S+)`} {
		ms := regexp.MustCompile(re).FindAllStringSubmatch(out, -1)
		if len(ms) == 0 {
			t.Errorf("no %s in the narration: the redaction check checks nothing", re)
		}
		for _, m := range ms {
			if m[1] != "…hidden…" {
				t.Errorf("the demo printed a secret: %s", m[0])
			}
		}
	}
	assertCleanedUp(t, f)
	if t.Failed() {
		t.Logf("narration:\n%s", out)
	}
}

// TestDemoKeep: with --keep the demo leaves everything up, the commands it
// prints work from another shell, and Ctrl-C then removes everything.
func TestDemoKeep(t *testing.T) {
	bash := requireProgram(t, "bash", "apt-get install bash")
	cmd := exec.Command(bin, "demo", "--keep")
	cmd.Env = cleanEnv(t)
	var out lockedBuffer
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited, done := make(chan error, 1), make(chan struct{})
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			fmt.Fprintln(&out, sc.Text())
			if strings.HasPrefix(sc.Text(), "Press Ctrl-C here") {
				close(ready)
			}
		}
		io.Copy(io.Discard, stdout)
		exited <- cmd.Wait()
		close(done)
	}()
	defer killUnlessExited(cmd, done)
	select {
	case <-ready:
	case err := <-exited:
		demoUnavailable(t, out.String())
		t.Fatalf("iamdb demo --keep exited before it was ready: %v\n%s", err, out.String())
	case <-time.After(3 * time.Minute):
		t.Fatalf("iamdb demo --keep not ready after 3 minutes:\n%s", out.String())
	}
	f := parseDemo(t, out.String())

	// The printed commands, in a shell of their own.
	script := `cd "$1" && . ./env.sh && iamdb connect postgres --instance orders --user alice --database orders --profile alice -- -At -c 'select current_user'`
	sh := exec.Command(bash, "-c", script, "bash", f.dir)
	sh.Env = cleanEnv(t)
	var shOut bytes.Buffer
	sh.Stdout, sh.Stderr = &shOut, &shOut
	if err := sh.Run(); err != nil || strings.TrimSpace(shOut.String()) != "alice" {
		t.Errorf("the printed commands in another shell: %v\n%s", err, shOut.String())
	}

	cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("iamdb demo --keep after Ctrl-C: %v (want exit 0)", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("iamdb demo --keep did not end within a minute of Ctrl-C")
	}
	assertCleanedUp(t, f)
	if t.Failed() {
		t.Logf("narration:\n%s", out.String())
	}
}

// TestDemoInterrupted: Ctrl-C in the middle of the walkthrough stops and
// removes everything started so far, and says so.
func TestDemoInterrupted(t *testing.T) {
	cmd := exec.Command(bin, "demo")
	cmd.Env = cleanEnv(t)
	var out lockedBuffer
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited, done := make(chan error, 1), make(chan struct{})
	serving := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			fmt.Fprintln(&out, sc.Text())
			// iamdb serve is up and the databases too: the most to clean.
			if strings.Contains(sc.Text(), "STS-compatible API") {
				close(serving)
			}
		}
		io.Copy(io.Discard, stdout)
		exited <- cmd.Wait()
		close(done)
	}()
	defer killUnlessExited(cmd, done)
	select {
	case <-serving:
	case err := <-exited:
		demoUnavailable(t, out.String())
		t.Fatalf("iamdb demo ended before iamdb serve started: %v\n%s", err, out.String())
	case <-time.After(3 * time.Minute):
		t.Fatalf("iamdb serve not started after 3 minutes:\n%s", out.String())
	}
	cmd.Process.Signal(syscall.SIGINT)
	var exitErr *exec.ExitError
	select {
	case err := <-exited:
		if !errors.As(err, &exitErr) || exitErr.ExitCode() != 1 {
			t.Errorf("iamdb demo after Ctrl-C: %v (want exit status 1)", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("iamdb demo did not end within a minute of Ctrl-C")
	}
	if !strings.Contains(out.String(), "interrupted; everything the demo started has been stopped and removed") {
		t.Errorf("no word of the interruption:\n%s", out.String())
	}
	assertCleanedUp(t, parseDemo(t, out.String()))
}

// killUnlessExited ends a demo a failed test left running; done is closed
// once it has been waited for.
func killUnlessExited(cmd *exec.Cmd, done <-chan struct{}) {
	select {
	case <-done:
	default:
		cmd.Process.Signal(syscall.SIGINT) // let it clean up
		select {
		case <-done:
		case <-time.After(time.Minute):
			cmd.Process.Kill()
		}
	}
}
