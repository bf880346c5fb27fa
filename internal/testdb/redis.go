package testdb

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisServer is a running throwaway Redis server without persistence or a
// password.
type RedisServer struct {
	Addr string // 127.0.0.1:PORT

	dir      string
	proc     *process
	stopOnce sync.Once
	stopErr  error
}

var redisDirs = []string{"/usr/bin", "/usr/local/bin", "/usr/sbin"}

// StartRedis starts redis-server on a free loopback port with persistence
// off. Redis runs as the current user, root included: unlike PostgreSQL it
// does not refuse to.
func StartRedis(ctx context.Context) (*RedisServer, error) {
	ctx, cancel := startDeadline(ctx)
	defer cancel()
	bin, ok := lookPath([]string{"redis-server"}, redisDirs)
	if !ok {
		return nil, fmt.Errorf("Redis %w: redis-server not found on PATH or in %v (Debian: apt-get install redis-server)", ErrNotInstalled, redisDirs)
	}
	dir, err := makeBaseDir("redis", nil)
	if err != nil {
		return nil, err
	}
	r := &RedisServer{dir: dir}
	if err := r.start(ctx, bin); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start Redis (%s): %w", bin, err)
	}
	running.add(r)
	return r, nil
}

func (r *RedisServer) start(ctx context.Context, bin string) error {
	logPath := filepath.Join(r.dir, "redis.log")
	var lastErr error
	for attempt := 0; attempt < maxPortAttempts; attempt++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		r.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		proc, err := startProcess(command(nil, r.dir, bin,
			"--port", strconv.Itoa(port),
			"--bind", "127.0.0.1",
			"--save", "",
			"--appendonly", "no",
			"--daemonize", "no",
			"--dir", r.dir,
		), logPath, nil)
		if err != nil {
			return err
		}
		err = waitReady(ctx, proc, func(ctx context.Context) error { return r.probe(ctx, proc.cmd.Process.Pid) })
		if err == nil {
			r.proc = proc
			return nil
		}
		proc.kill()
		lastErr = err
		if !addrInUse(proc.log()) {
			break
		}
	}
	return lastErr
}

// probe pings the server and checks that it is our process: Redis has no
// password here, so any Redis that took the port first would answer PING.
func (r *RedisServer) probe(ctx context.Context, pid int) error {
	c := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		return err
	}
	want := "process_id:" + strconv.Itoa(pid)
	for _, line := range strings.Split(info, "\n") {
		if strings.TrimSpace(line) == want {
			return nil
		}
	}
	return fmt.Errorf("%s is served by another Redis (want %s)", r.Addr, want)
}

// Client returns a go-redis client for this server; the caller closes it.
func (r *RedisServer) Client() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: r.Addr})
}

// Stop shuts the server down and removes its directory. It is safe to call
// more than once.
func (r *RedisServer) Stop() error {
	r.stopOnce.Do(func() {
		running.remove(r)
		var err error
		if r.proc != nil {
			err = r.proc.stop(syscall.SIGTERM, 30*time.Second)
		}
		if rmErr := os.RemoveAll(r.dir); rmErr != nil {
			err = errors.Join(err, fmt.Errorf("remove Redis directory: %w", rmErr))
		}
		if err != nil {
			r.stopErr = fmt.Errorf("stop Redis on %s: %w", r.Addr, err)
		}
	})
	return r.stopErr
}
