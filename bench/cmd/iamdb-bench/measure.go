package main

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// result is what was measured for one target. A nil stats pointer with a
// nil error means the metric does not apply (memory of PostgreSQL itself).
type result struct {
	target      string
	unavailable string // set when the target could not be measured at all
	err         error  // why it failed to start, when it did
	note        string // how the target was set up, when that varies

	logins     *loginStats
	loginsErr  error
	pgbench    *pgbenchStats
	pgbenchErr error
	mem        *memStats
	memErr     error
	qps        *qpsStats // MariaDB point selects
	qpsErr     error

	// reused is how many of the logins took an idle upstream session
	// (iamdb; -1 when unknown).
	reused int64
	// loginsPoolOff: iamdb's logins again with its pool switched off.
	loginsPoolOff    *loginStats
	loginsPoolOffErr error
}

type loginStats struct {
	ok, failed int64
	elapsed    time.Duration
	errors     []string // a few distinct error messages
}

func (s *loginStats) perSecond() float64 { return float64(s.ok) / s.elapsed.Seconds() }

type pgbenchStats struct {
	tps       float64 // without initial connection time
	latencyMS float64 // average
	failed    int64   // failed transactions (PostgreSQL 15+ pgbench)
}

type memStats struct {
	conns             int
	beforeKB, afterKB int64
}

func (m *memStats) perConnKiB() float64 { return float64(m.afterKB-m.beforeKB) / float64(m.conns) }

// measure runs every measurement that applies to t, in a fixed order:
// memory first, on a process that has served only its readiness login, then
// logins, then pgbench.
func measure(ctx context.Context, t *target, opt options, log *slog.Logger) result {
	r := result{target: t.name, note: t.note, reused: -1}
	if t.proc != nil && ctx.Err() == nil {
		log.Info("measuring memory per idle connection", "target", t.name, "connections", opt.Idle)
		r.mem, r.memErr = measureMemory(ctx, t, opt.Idle)
		logDone(log, t.name, "memory", r.memErr)
	}
	if ctx.Err() == nil {
		log.Info("measuring new TLS logins", "target", t.name, "clients", opt.Clients, "duration", opt.Duration)
		before, berr := reusedSoFar(ctx, t)
		r.logins, r.loginsErr = measureLogins(ctx, t, opt.Clients, opt.Duration)
		logDone(log, t.name, "logins", r.loginsErr)
		if after, aerr := reusedSoFar(ctx, t); berr == nil && aerr == nil && before >= 0 && after >= before {
			r.reused = after - before
		}
	}
	if ctx.Err() == nil {
		log.Info("running pgbench -S", "target", t.name, "clients", opt.Clients, "duration", opt.Duration)
		r.pgbench, r.pgbenchErr = runPgbench(ctx, t, opt.Clients, opt.Duration)
		logDone(log, t.name, "pgbench", r.pgbenchErr)
	}
	if t.poolOff != nil && ctx.Err() == nil {
		log.Info("measuring new TLS logins with the upstream session pool off", "target", t.name)
		if r.loginsPoolOffErr = t.poolOff(ctx); r.loginsPoolOffErr == nil {
			r.loginsPoolOff, r.loginsPoolOffErr = measureLogins(ctx, t, opt.Clients, opt.Duration)
		}
		logDone(log, t.name, "logins with the pool off", r.loginsPoolOffErr)
	}
	return r
}

// reusedSoFar is the target's count of logins that reused an upstream
// session, -1 for targets that do not count them.
func reusedSoFar(ctx context.Context, t *target) (int64, error) {
	if t.reusedLogins == nil {
		return -1, nil
	}
	return t.reusedLogins(ctx)
}

func logDone(log *slog.Logger, target, what string, err error) {
	if err != nil {
		log.Error("measurement failed", "target", target, "what", what, "err", err)
	}
}

// measureLogins runs clients goroutines for d, each looping over a fresh
// TLS connection, SELECT 1 and close. Every connection does a full TLS
// handshake (Go's client has no session cache unless one is configured) and
// a full password or token login.
func measureLogins(ctx context.Context, t *target, clients int, d time.Duration) (*loginStats, error) {
	pw, err := t.password()
	if err != nil {
		return nil, err
	}
	cfg, err := pgconn.ParseConfig(t.connString(pw))
	if err != nil {
		return nil, fmt.Errorf("parse connection string: %w", err)
	}
	var (
		ok, failed atomic.Int64
		mu         sync.Mutex
		samples    []string
		wg         sync.WaitGroup
	)
	record := func(err error) {
		failed.Add(1)
		mu.Lock()
		defer mu.Unlock()
		msg := err.Error()
		for _, s := range samples {
			if s == msg {
				return
			}
		}
		if len(samples) < 3 {
			samples = append(samples, msg)
		}
	}
	start := time.Now()
	deadline := start.Add(d)
	for range clients {
		wg.Go(func() {
			for time.Now().Before(deadline) && ctx.Err() == nil {
				err := loginOnce(ctx, cfg)
				switch {
				case err == nil:
					ok.Add(1)
				case ctx.Err() == nil: // an interrupted login is no error of the target
					record(err)
				}
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err // a cut-short run is no rate
	}
	return &loginStats{ok: ok.Load(), failed: failed.Load(), elapsed: time.Since(start), errors: samples}, nil
}

func loginOnce(ctx context.Context, cfg *pgconn.Config) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	_, err = conn.Exec(ctx, "SELECT 1").ReadAll()
	if cerr := conn.Close(ctx); err == nil {
		err = cerr
	}
	return err
}

var (
	tpsRE     = regexp.MustCompile(`(?m)^tps = ([0-9.]+) \(without initial connection time\)`)
	latencyRE = regexp.MustCompile(`(?m)^latency average = ([0-9.]+) ms`)
	failedRE  = regexp.MustCompile(`(?m)^number of failed transactions: ([0-9]+)`)
)

// runPgbench runs pgbench's built-in select-only script against t for d
// (rounded up to whole seconds) with clients connections over TLS.
func runPgbench(ctx context.Context, t *target, clients int, d time.Duration) (*pgbenchStats, error) {
	pw, err := t.password()
	if err != nil {
		return nil, err
	}
	jobs := min(2, clients)
	secs := int(math.Ceil(d.Seconds()))
	env := append(cleanEnv(), "PGPASSWORD="+pw, "PGSSLMODE=require")
	out, err := runCommand(ctx, env, t.pgbench,
		"-S", "-n", "-c", strconv.Itoa(clients), "-j", strconv.Itoa(jobs), "-T", strconv.Itoa(secs),
		"-h", t.host, "-p", strconv.Itoa(t.port), "-U", benchUser, benchDB)
	if err != nil {
		return nil, err
	}
	return parsePgbench(out)
}

func parsePgbench(out string) (*pgbenchStats, error) {
	tps := tpsRE.FindStringSubmatch(out)
	lat := latencyRE.FindStringSubmatch(out)
	if tps == nil || lat == nil {
		return nil, fmt.Errorf("pgbench output has no tps or latency line:\n%s", tail(out, 20))
	}
	s := &pgbenchStats{}
	s.tps, _ = strconv.ParseFloat(tps[1], 64)
	s.latencyMS, _ = strconv.ParseFloat(lat[1], 64)
	if m := failedRE.FindStringSubmatch(out); m != nil {
		s.failed, _ = strconv.ParseInt(m[1], 10, 64)
	}
	return s, nil
}

// measureMemory reads the target process's resident memory, opens n idle
// connections (logged in, no query), reads it again and closes them.
func measureMemory(ctx context.Context, t *target, n int) (*memStats, error) {
	pw, err := t.password()
	if err != nil {
		return nil, err
	}
	cfg, err := pgconn.ParseConfig(t.connString(pw))
	if err != nil {
		return nil, fmt.Errorf("parse connection string: %w", err)
	}
	pid := t.proc.pid()
	before, err := vmRSS(pid)
	if err != nil {
		return nil, err
	}

	conns := make([]*pgconn.PgConn, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8) // a gentle ramp, not a login storm
	for i := range conns {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			conns[i], errs[i] = pgconn.ConnectConfig(cctx, cfg)
		})
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close(context.Background())
			}
		}
	}()
	var failed int
	var first error
	for _, err := range errs {
		if err != nil {
			failed++
			first = cmp.Or(first, err)
		}
	}
	if failed > 0 {
		return nil, fmt.Errorf("open %d idle connections: %d failed, first: %w", n, failed, first)
	}
	// Give the process a moment to finish per-session work that follows the
	// login (goroutines starting their relay loops, buffers being filled).
	select {
	case <-time.After(500 * time.Millisecond):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	after, err := vmRSS(pid)
	if err != nil {
		return nil, err
	}
	return &memStats{conns: n, beforeKB: before, afterKB: after}, nil
}

// vmRSS is the resident set size of pid in KiB, from /proc/PID/status.
func vmRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read memory of pid %d: %w", pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse VmRSS %q: %w", v, err)
			}
			return kb, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}
