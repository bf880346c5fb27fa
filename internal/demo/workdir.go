package demo

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// dirPrefix names the demo's working directories under the temp dir, so
// that ones left by a killed demo can be recognised and removed.
const dirPrefix = "iamdb-demo-"

// ownerFile records the pid of the demo that owns a working directory.
const ownerFile = "owner.pid"

// makeWorkDir creates the demo's private working directory, after removing
// those of demos that were killed before they could clean up.
func makeWorkDir() (string, error) {
	sweepStale(os.TempDir())
	dir, err := os.MkdirTemp("", dirPrefix)
	if err != nil {
		return "", fmt.Errorf("create the demo's working directory: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("create the demo's working directory: %w", err)
	}
	return dir, nil
}

// sweepStale removes working directories whose demo process is gone. A
// directory without an owner file may be in the middle of being created by
// another demo and is left alone.
func sweepStale(parent string) {
	dirs, _ := filepath.Glob(filepath.Join(parent, dirPrefix+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, ownerFile))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.RemoveAll(d)
		}
	}
}

// freePorts returns n distinct free loopback ports. They are free now; the
// window until iamdb serve binds them is short, and a lost race shows as a
// clear bind error from iamdb serve.
func freePorts(n int) ([]int, error) {
	var ports []int
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// tools are the client programs the demo drives.
type tools struct {
	aws, psql, mariadb string
}

// findTools locates the AWS CLI, psql and MariaDB's client, or says what to
// install.
func findTools() (tools, error) {
	var t tools
	var missing []string
	var ok bool
	if t.aws, ok = findAWS(); !ok {
		missing = append(missing, "the AWS CLI (aws; Debian: apt-get install awscli, or pip install awscli)")
	}
	if p, err := exec.LookPath("psql"); err == nil {
		t.psql = p
	} else {
		missing = append(missing, "psql (Debian: apt-get install postgresql-client)")
	}
	if t.mariadb, ok = findMariaDBClient(); !ok {
		missing = append(missing, "MariaDB's client (mariadb; Debian: apt-get install mariadb-client)")
	}
	if len(missing) > 0 {
		return t, fmt.Errorf("iamdb demo drives real clients and these are missing: %s. Run scripts/deps.sh (make demo runs it for you)",
			strings.Join(missing, ", "))
	}
	return t, nil
}

// findAWS finds the AWS CLI on PATH or where pip and pyenv put it, which
// may be missing from a script's PATH.
func findAWS() (string, bool) {
	if p, err := exec.LookPath("aws"); err == nil {
		return p, true
	}
	home, _ := os.UserHomeDir()
	if home == "" {
		return "", false
	}
	for _, p := range []string{filepath.Join(home, ".local", "bin", "aws"), filepath.Join(home, ".pyenv", "shims", "aws")} {
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p, true
		}
	}
	return "", false
}

// findMariaDBClient finds MariaDB's client, under its name or its old one;
// MySQL's own client takes other TLS flags than the ones the demo shows.
func findMariaDBClient() (string, bool) {
	if p, err := exec.LookPath("mariadb"); err == nil {
		return p, true
	}
	if p, err := exec.LookPath("mysql"); err == nil {
		if out, err := exec.Command(p, "--version").Output(); err == nil && strings.Contains(string(out), "MariaDB") {
			return p, true
		}
	}
	return "", false
}

// baseEnv is the environment the demo's commands start from: the caller's,
// without settings that would send them elsewhere (AWS credentials and
// profiles, iamdb's, libpq's and the MySQL client's connection variables).
func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "AWS_"), strings.HasPrefix(k, "IAMDB_"),
			strings.HasPrefix(k, "PG"), strings.HasPrefix(k, "MYSQL_"), k == "PATH":
			continue
		}
		env = append(env, kv)
	}
	return env
}
