package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// options are the command-line flags.
type options struct {
	Duration    time.Duration // per throughput measurement
	Clients     int           // concurrent clients for logins and pgbench
	Idle        int           // idle connections opened for the memory measurement
	IAMDB       string        // path to the iamdb binary
	BackendAuth string        // iamdb backend_auth.mode: managed or secrets
	PgBouncer   string        // path to the pgbouncer binary
	Only        string        // "", "postgres" or "mariadb": measure one engine's rows only
}

// maxClients keeps clients plus PostgreSQL's reserved slots below the
// throwaway server's max_connections.
const (
	pgMaxConnections = 300
	maxClients       = 200
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == relayArg {
		os.Exit(relayMain(os.Args[2:]))
	}
	var opt options
	fs := flag.NewFlagSet("iamdb-bench", flag.ContinueOnError)
	fs.DurationVar(&opt.Duration, "duration", 10*time.Second, "length of each throughput measurement (logins, pgbench)")
	fs.IntVar(&opt.Clients, "clients", 8, "concurrent clients for the logins and pgbench measurements")
	fs.IntVar(&opt.Idle, "idle", 200, "idle connections opened to measure memory per connection")
	fs.StringVar(&opt.IAMDB, "iamdb", "bin/iamdb", "iamdb binary (make build)")
	fs.StringVar(&opt.BackendAuth, "backend-auth", "managed", "iamdb backend_auth.mode for the benchmark: managed or secrets")
	fs.StringVar(&opt.PgBouncer, "pgbouncer", "/usr/sbin/pgbouncer", "pgbouncer binary (Debian package pgbouncer)")
	fs.StringVar(&opt.Only, "only", "", "measure only the rows of one engine: postgres or mariadb")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: iamdb-bench [--duration 10s] [--clients 8] [--idle 200] [--only postgres|mariadb]\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	if err := opt.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "iamdb-bench:", err)
		os.Exit(2)
	}

	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	// SIGINT and SIGTERM cancel the run; the deferred cleanup in run then
	// stops every process and removes every directory it created.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	rep, err := run(ctx, opt, log)
	if rep != nil {
		rep.write(os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "iamdb-bench:", err)
		os.Exit(1)
	}
	if rep.failed() {
		os.Exit(1)
	}
}

func (o options) validate() error {
	switch {
	case o.Duration < time.Second:
		return fmt.Errorf("--duration %s: measure for at least 1s (pgbench counts whole seconds)", o.Duration)
	case o.Clients < 1 || o.Clients > maxClients:
		return fmt.Errorf("--clients %d: use 1 to %d (PostgreSQL allows %d connections)", o.Clients, maxClients, pgMaxConnections)
	case o.Idle < 1 || o.Idle > maxClients:
		return fmt.Errorf("--idle %d: use 1 to %d (every idle iamdb connection holds a PostgreSQL connection)", o.Idle, maxClients)
	case o.BackendAuth != "managed" && o.BackendAuth != "secrets":
		return fmt.Errorf("--backend-auth %q: use managed or secrets", o.BackendAuth)
	case o.Only != "" && o.Only != "postgres" && o.Only != "mariadb":
		return fmt.Errorf("--only %q: use postgres or mariadb", o.Only)
	}
	return nil
}

// run sets everything up, measures the targets one after another and
// returns the report. A target that cannot be set up gets an n/a column; only
// a failure of PostgreSQL itself ends the run early.
func run(ctx context.Context, opt options, log *slog.Logger) (*report, error) {
	if opt.Only == "mariadb" {
		rep := &report{opt: opt, machine: describeMachine(ctx, nil, opt)}
		runMariaDB(ctx, rep, opt, log)
		if ctx.Err() != nil {
			return rep, fmt.Errorf("interrupted: %w", context.Cause(ctx))
		}
		return rep, nil
	}
	var cl cleanups
	defer cl.run(log)

	pg, err := startPostgres(ctx, &cl, log)
	if err != nil {
		return nil, err
	}
	rep := &report{opt: opt, machine: describeMachine(ctx, pg, opt)}

	direct := pg.directTarget()
	rep.add(measure(ctx, direct, opt, log))

	rep.add(measureStarted(ctx, "PgBouncer", opt, log, func(cl *cleanups) (*target, error) {
		return startPgBouncer(ctx, pg, opt, cl, log)
	}))

	rep.add(measureStarted(ctx, "iamdb", opt, log, func(cl *cleanups) (*target, error) {
		return startIAMDB(ctx, pg, opt, cl, log)
	}))

	if opt.Only != "postgres" {
		runMariaDB(ctx, rep, opt, log)
	}
	if ctx.Err() != nil {
		return rep, fmt.Errorf("interrupted: %w", context.Cause(ctx))
	}
	return rep, nil
}

// measureStarted starts a target's process, measures it and stops it again
// before the next target starts.
func measureStarted(ctx context.Context, name string, opt options, log *slog.Logger, start func(*cleanups) (*target, error)) result {
	var cl cleanups
	defer cl.run(log)
	if ctx.Err() != nil {
		return result{target: name, unavailable: "interrupted"}
	}
	t, err := start(&cl)
	if err != nil {
		var na *notAvailableError
		if errors.As(err, &na) {
			log.Warn("target not available", "target", name, "reason", na.reason)
			return result{target: name, unavailable: na.reason}
		}
		log.Error("target failed to start", "target", name, "err", err)
		return result{target: name, unavailable: "failed to start", err: err}
	}
	return measure(ctx, t, opt, log)
}

// notAvailableError marks a target that this machine or this build of iamdb
// cannot provide; the table says so instead of failing the run.
type notAvailableError struct{ reason string }

func (e *notAvailableError) Error() string { return e.reason }

// cleanups runs undo steps in reverse order, once.
type cleanups struct{ fns []func() error }

func (c *cleanups) add(fn func() error) { c.fns = append(c.fns, fn) }

func (c *cleanups) run(log *slog.Logger) {
	for i := len(c.fns) - 1; i >= 0; i-- {
		if err := c.fns[i](); err != nil {
			log.Warn("cleanup", "err", err)
		}
	}
	c.fns = nil
}
