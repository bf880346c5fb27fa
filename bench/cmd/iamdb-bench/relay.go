package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// relayArg, as the first argument, makes iamdb-bench a TCP relay (see
// runRelay) instead of running the benchmark.
const relayArg = "tcp-relay"

// mariaRelay is the reference target of the MariaDB rows: the client's
// bytes, TLS and all, copied to MariaDB by a process that does nothing
// else.
const mariaRelay = "TCP relay (MariaDB)"

// runRelay accepts connections on listen and copies bytes between each
// client and a new connection to upstream until either side closes. It
// terminates no TLS and reads no protocol, and between two TCP sockets Go
// copies with splice(2), so it is the cheapest relay there is: what it
// costs compared with connecting directly is what putting any proxy
// process on the path costs on this machine, before the proxy does any
// work of its own.
func runRelay(listen, upstream string) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("tcp relay: %w", err)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return fmt.Errorf("tcp relay: %w", err)
		}
		go relayConn(c, upstream)
	}
}

func relayConn(c net.Conn, upstream string) {
	defer c.Close()
	u, err := net.DialTimeout("tcp", upstream, 10*time.Second)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tcp relay:", err)
		return
	}
	defer u.Close()
	done := make(chan struct{})
	go func() {
		io.Copy(u, c)
		u.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	io.Copy(c, u)
	c.(*net.TCPConn).CloseWrite()
	<-done
}

// startRelay runs this program as a TCP relay to m and returns it as a
// target that logs in exactly as the direct one does.
func startRelay(ctx context.Context, m *mariadb, cl *cleanups, log *slog.Logger) (*mysqlTarget, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("tcp relay: find this program: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "iamdb-bench-relay-")
	if err != nil {
		return nil, fmt.Errorf("tcp relay: %w", err)
	}
	cl.add(func() error { return os.RemoveAll(dir) })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	log.Info("starting the TCP relay to MariaDB", "listen", addr)
	proc, err := startProcess("tcp relay", filepath.Join(dir, "relay.log"), nil, cleanEnv(), self, relayArg, addr, m.Addr())
	if err != nil {
		return nil, err
	}
	cl.add(func() error { return proc.stop(syscall.SIGTERM, 5*time.Second) })
	t, err := m.directTarget()
	if err != nil {
		return nil, err
	}
	t.name, t.addr = mariaRelay, addr
	t.note = "the direct target's logins and queries through " + relayArg + ", a process that copies bytes between the client and MariaDB (Go io.Copy, splice(2)) and does nothing else: no TLS termination, no protocol. Its ratio to direct is what any proxy process on the path costs here"
	if err := waitReady(ctx, proc, 15*time.Second, t.probe); err != nil {
		return nil, fmt.Errorf("log in through the TCP relay: %w", err)
	}
	return t, nil
}

// relayMain runs the relay mode of main: iamdb-bench tcp-relay LISTEN UPSTREAM.
func relayMain(args []string) int {
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: iamdb-bench "+relayArg+" LISTEN_ADDR UPSTREAM_ADDR")
		return 2
	}
	err := runRelay(args[0], args[1])
	if errors.Is(err, net.ErrClosed) {
		return 0
	}
	fmt.Fprintln(os.Stderr, err)
	return 1
}
