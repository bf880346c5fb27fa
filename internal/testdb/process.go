package testdb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// dirPrefix names every directory this package creates under the temp dir,
// so stale ones left by a killed process can be recognised and swept.
const dirPrefix = "iamdb-testdb-"

// ownerFile records, inside each private directory, the pid of the process
// that created it; a directory whose owner is gone is garbage.
const ownerFile = "owner.pid"

// account is an unprivileged OS user that a server runs as when we are root:
// initdb and postgres refuse to run as root, and running mariadbd as its own
// user keeps its files out of root's hands.
type account struct {
	name     string
	uid, gid uint32
}

// serviceAccount returns the OS user a server must run as, or nil when the
// current process is not root and the server can simply run as ourselves.
func serviceAccount(name, server string) (*account, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("%w: running as root, so %s must run as the %q OS user, which does not exist (%v); install the server package (scripts/deps.sh) to create it",
			ErrNotInstalled, server, name, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parse uid of OS user %q: %w", name, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parse gid of OS user %q: %w", name, err)
	}
	return &account{name: name, uid: uint32(uid), gid: uint32(gid)}, nil
}

// chown hands a path to the service account; a no-op when not root.
func (a *account) chown(paths ...string) error {
	if a == nil {
		return nil
	}
	for _, p := range paths {
		if err := os.Lchown(p, int(a.uid), int(a.gid)); err != nil {
			return fmt.Errorf("chown %s to %s: %w", p, a.name, err)
		}
	}
	return nil
}

// lookPath finds the first of names that is executable, first on PATH and
// then in the extra directories: Debian puts server daemons in /usr/sbin,
// which is not on every user's PATH.
func lookPath(names []string, extraDirs []string) (string, bool) {
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p, true
		}
	}
	for _, n := range names {
		for _, d := range extraDirs {
			p := filepath.Join(d, n)
			if isExecutable(p) {
				return p, true
			}
		}
	}
	return "", false
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// freePort asks the kernel for an unused TCP port on the loopback address.
// Another process may grab it before our server binds it; callers detect
// "Address already in use" in the server log and retry with a new port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// maxPortAttempts bounds the retries when a freshly chosen port turns out to
// be taken by the time the server binds it.
const maxPortAttempts = 5

func addrInUse(log string) bool {
	return strings.Contains(log, "Address already in use") ||
		strings.Contains(log, "address already in use")
}

// tempParent picks where private directories go. The service account must be
// able to traverse every parent, and Unix socket paths are limited to ~107
// bytes, so an unsuitable TMPDIR falls back to /tmp.
func tempParent(owner *account) string {
	parent := os.TempDir()
	if len(parent) > 60 || (owner != nil && !traversable(parent, owner)) {
		return "/tmp"
	}
	return parent
}

// traversable reports whether owner can reach path: every directory from the
// root down must be searchable by it.
func traversable(path string, owner *account) bool {
	abs, err := filepath.Abs(path)
	if err != nil {
		return false
	}
	for p := abs; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return false
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		perm := fi.Mode().Perm()
		switch {
		case ok && st.Uid == owner.uid:
			if perm&0o100 == 0 {
				return false
			}
		case ok && st.Gid == owner.gid:
			if perm&0o010 == 0 {
				return false
			}
		default:
			if perm&0o001 == 0 {
				return false
			}
		}
		if p == filepath.Dir(p) {
			return true
		}
	}
}

var sweepOnce sync.Once

// makeBaseDir creates a private directory (0700, owned by the service
// account) for one server: data, sockets, logs and certificates all live
// under it, so removing it removes every trace of the server.
func makeBaseDir(kind string, owner *account) (string, error) {
	parent := tempParent(owner)
	sweepOnce.Do(func() { sweepStale(parent) })
	dir, err := os.MkdirTemp(parent, dirPrefix+kind+"-")
	if err != nil {
		return "", fmt.Errorf("create %s directory: %w", kind, err)
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("record owner of %s: %w", dir, err)
	}
	if err := owner.chown(dir); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}

// sweepStale removes directories left behind by processes that were killed
// before they could clean up (their servers died with them, see spawn).
// Directories without an owner file are left alone: their creator may be
// between MkdirTemp and writing the file.
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

// spawnReq asks the spawner thread to start a command.
type spawnReq struct {
	cmd *exec.Cmd
	err chan error
}

var (
	spawnOnce sync.Once
	spawnCh   chan spawnReq
)

// spawn starts cmd from one OS thread that lives as long as the process.
// Children get a parent-death signal so they die with the test binary even
// when it is killed without running StopAll; Linux delivers that signal when
// the forking *thread* exits, and the Go runtime may retire threads, so all
// forks happen on a locked thread that never returns.
func spawn(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnCh = make(chan spawnReq)
		go func() {
			runtime.LockOSThread()
			for r := range spawnCh {
				r.err <- r.cmd.Start()
			}
		}()
	})
	r := spawnReq{cmd: cmd, err: make(chan error, 1)}
	spawnCh <- r
	return <-r.err
}

// command builds an exec.Cmd that runs in its own process group (so a
// terminal's Ctrl-C does not reach it and Stop can kill the whole tree), dies
// with its parent, and runs as owner when one is given.
func command(owner *account, dir, path string, args ...string) *exec.Cmd {
	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	env := os.Environ()
	if owner != nil {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: owner.uid, Gid: owner.gid}
		// root's HOME is unreadable for the service account, and tools
		// consult HOME and USER for option files and defaults.
		env = append(env, "HOME="+dir, "USER="+owner.name, "LOGNAME="+owner.name)
	}
	cmd.Env = append(env, "LC_ALL=C")
	return cmd
}

// run executes a short-lived setup command (initdb, mariadb-install-db),
// writing its output to logPath and including the tail of that log in the
// error when it fails.
func run(ctx context.Context, cmd *exec.Cmd, logPath string) error {
	name := filepath.Base(cmd.Path)
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open %s log: %w", name, err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := spawn(cmd); err != nil {
		return fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		err = ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(cmd.Args[1:], " "), err, logTail(logPath, 0))
	}
	return nil
}

// process is a running server daemon.
type process struct {
	cmd     *exec.Cmd
	logPath string
	logFrom int64         // log offset at which this run's output starts
	done    chan struct{} // closed when the process has exited
	waitErr error         // valid after done is closed
}

// startProcess starts a long-running daemon whose output is appended to
// logPath.
func startProcess(cmd *exec.Cmd, logPath string, owner *account) (*process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open server log: %w", err)
	}
	defer logf.Close() // the child holds its own copy of the descriptor
	if err := owner.chown(logPath); err != nil {
		return nil, err
	}
	from, _ := logf.Seek(0, io.SeekEnd)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := spawn(cmd); err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	p := &process{cmd: cmd, logPath: logPath, logFrom: from, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// log returns the tail of what this run of the process has logged.
func (p *process) log() string { return logTail(p.logPath, p.logFrom) }

// stop sends sig (each server's "fast shutdown" signal) and, if the process
// has not exited within grace, kills its whole process group.
func (p *process) stop(sig syscall.Signal, grace time.Duration) error {
	if p.exited() {
		return nil
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %s: %w", filepath.Base(p.cmd.Path), err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
	return fmt.Errorf("%s did not stop within %v after %v; killed it", filepath.Base(p.cmd.Path), grace, sig)
}

// kill ends the process group at once; used when start-up failed.
func (p *process) kill() {
	if !p.exited() {
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
	<-p.done
}

// logTail returns the last lines of a log file from offset on, for error
// messages: a server that fails to start says why only in its log.
func logTail(path string, from int64) string {
	const maxBytes = 4096
	f, err := os.Open(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	start := from
	if fi.Size()-start > maxBytes {
		start = fi.Size() - maxBytes
	}
	b := make([]byte, fi.Size()-start)
	n, _ := f.ReadAt(b, start)
	b = bytes.TrimSpace(b[:n])
	if start > from {
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	if len(b) == 0 {
		return "(log " + path + " is empty)"
	}
	return "--- " + path + " ---\n" + string(b)
}

// startDeadline gives ctx a default deadline so a hung server cannot hang the
// caller forever.
func startDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, 2*time.Minute)
}

// pollInterval is how often readiness is probed while a server starts.
const pollInterval = 25 * time.Millisecond

// waitReady calls probe until it succeeds, the process exits, or ctx ends.
func waitReady(ctx context.Context, p *process, probe func(context.Context) error) error {
	var last error
	for {
		if p.exited() {
			return fmt.Errorf("server exited during start-up (%v)\n%s", p.waitErr, p.log())
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		last = probe(pctx)
		cancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("server not ready: %w (last error: %v)\n%s", ctx.Err(), last, p.log())
		case <-p.done:
		case <-time.After(pollInterval):
		}
	}
}
