package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
)

// report collects the results of every target and prints them as one table.
type report struct {
	opt     options
	machine string
	results []result
}

func (r *report) add(res result) { r.results = append(r.results, res) }

func (r *report) get(target string) *result {
	for i := range r.results {
		if r.results[i].target == target {
			return &r.results[i]
		}
	}
	return &result{target: target, unavailable: "not run"}
}

// failed reports whether anything went wrong that the caller should see in
// the exit code: a target that failed to start, a failed measurement, or a
// login or transaction error. An iamdb without `serve` is not a failure.
func (r *report) failed() bool {
	for _, res := range r.results {
		if res.err != nil || res.loginsErr != nil || res.pgbenchErr != nil || res.memErr != nil || res.qpsErr != nil || res.loginsPoolOffErr != nil {
			return true
		}
		if (res.logins != nil && res.logins.failed > 0) || (res.pgbench != nil && res.pgbench.failed > 0) || (res.qps != nil && res.qps.failed > 0) ||
			(res.loginsPoolOff != nil && res.loginsPoolOff.failed > 0) {
			return true
		}
	}
	return false
}

// row is one metric: how to read it from a result, and which ratio has a
// goal.
type row struct {
	label string
	value func(*result) (float64, bool, error) // ok=false: not applicable
	unit  string                               // printf format of a value
	// noRatio leaves the ratio columns empty (a count of errors).
	noRatio  bool
	goal     string
	goalBase string // "direct PostgreSQL" or "PgBouncer"
	goalMin  float64
	// mariadb rows read the MariaDB targets: "direct MariaDB" in the direct
	// column, the TCP relay in the PgBouncer column, "iamdb (MariaDB)" in
	// the iamdb column.
	mariadb bool
}

func (r *report) write(w io.Writer) {
	direct, bouncer, iam := r.get("direct PostgreSQL"), r.get("PgBouncer"), r.get("iamdb")
	c := r.opt.Clients
	rows := []row{
		{
			label: fmt.Sprintf("new TLS logins/s (%d clients)", c),
			value: func(res *result) (float64, bool, error) {
				if res.logins == nil {
					return 0, true, orNotRun(res.loginsErr)
				}
				return res.logins.perSecond(), true, nil
			},
			unit: "%.0f", goal: "iamdb ≥ 0.8× direct", goalBase: "direct PostgreSQL", goalMin: 0.8,
		},
		{
			label: "login errors",
			value: func(res *result) (float64, bool, error) {
				if res.logins == nil {
					return 0, true, orNotRun(res.loginsErr)
				}
				return float64(res.logins.failed), true, nil
			},
			unit: "%.0f", noRatio: true, goal: "0 everywhere",
		},
		{
			// The same direct and PgBouncer figures as above, against
			// iamdb with every login dialling the upstream.
			label: fmt.Sprintf("new TLS logins/s, iamdb pool off (%d clients)", c),
			value: func(res *result) (float64, bool, error) {
				stats, err := res.logins, res.loginsErr
				if res.target == "iamdb" {
					stats, err = res.loginsPoolOff, res.loginsPoolOffErr
				}
				if stats == nil {
					return 0, true, orNotRun(err)
				}
				return stats.perSecond(), true, nil
			},
			unit: "%.0f", goal: "for comparison: each login dials the upstream",
		},
		{
			label: fmt.Sprintf("pgbench -S TPS (%d clients)", c),
			value: func(res *result) (float64, bool, error) {
				if res.pgbench == nil {
					return 0, true, orNotRun(res.pgbenchErr)
				}
				return res.pgbench.tps, true, nil
			},
			unit: "%.0f", goal: "iamdb ≥ 0.9× PgBouncer", goalBase: "PgBouncer", goalMin: 0.9,
		},
		{
			label: "pgbench -S avg latency (ms)",
			value: func(res *result) (float64, bool, error) {
				if res.pgbench == nil {
					return 0, true, orNotRun(res.pgbenchErr)
				}
				return res.pgbench.latencyMS, true, nil
			},
			unit: "%.3f",
		},
		{
			label: fmt.Sprintf("RSS per idle client connection (KiB, %d conns)", r.opt.Idle),
			value: func(res *result) (float64, bool, error) {
				if res.target == "direct PostgreSQL" {
					return 0, false, nil // a backend process per connection; not comparable
				}
				if res.mem == nil {
					return 0, true, orNotRun(res.memErr)
				}
				return res.mem.perConnKiB(), true, nil
			},
			unit: "%.1f",
		},
		{
			label:   fmt.Sprintf("MariaDB: new TLS logins/s (%d clients)", c),
			mariadb: true,
			value: func(res *result) (float64, bool, error) {
				if res.logins == nil {
					return 0, true, orNotRun(res.loginsErr)
				}
				return res.logins.perSecond(), true, nil
			},
			unit: "%.0f", goal: "iamdb ≥ 0.8× direct", goalBase: "direct PostgreSQL", goalMin: 0.8,
		},
		{
			label:   "MariaDB: login errors",
			mariadb: true,
			value: func(res *result) (float64, bool, error) {
				if res.logins == nil {
					return 0, true, orNotRun(res.loginsErr)
				}
				return float64(res.logins.failed), true, nil
			},
			unit: "%.0f", noRatio: true, goal: "0 everywhere",
		},
		{
			label:   fmt.Sprintf("MariaDB: point-SELECT QPS (%d persistent clients)", c),
			mariadb: true,
			value: func(res *result) (float64, bool, error) {
				if res.qps == nil {
					return 0, true, orNotRun(res.qpsErr)
				}
				return res.qps.perSecond(), true, nil
			},
			unit: "%.0f", goal: "iamdb ≥ 0.85× direct", goalBase: "direct PostgreSQL", goalMin: 0.85,
		},
		{
			label:   "MariaDB: point-SELECT avg latency (ms)",
			mariadb: true,
			value: func(res *result) (float64, bool, error) {
				if res.qps == nil {
					return 0, true, orNotRun(res.qpsErr)
				}
				return res.qps.avgLatencyMS(), true, nil
			},
			unit: "%.3f",
		},
	}

	fmt.Fprintf(w, "\n## iamdb benchmark\n\n")
	fmt.Fprintf(w, "Machine: %s\n\n", r.machine)
	fmt.Fprintf(w, "Run: %d clients, %s per throughput measurement, %d idle connections for memory; TLS on every hop "+
		"(Go clients: sslmode=require, iamdb verify-full against its CA bundle; pgbench: sslmode=require; "+
		"PostgreSQL and PgBouncer: scram-sha-256; iamdb: one reused IAM token, then an idle upstream session left by an "+
		"earlier client (reset with DISCARD ALL) or, when there is none, TLS + SCRAM to PostgreSQL; its default upstream "+
		"session pool is on except in the pool-off row). "+
		"MariaDB rows: go-sql-driver/mysql over TLS, direct with mysql_native_password, through iamdb with the token "+
		"(mysql_clear_password) and a managed native password upstream; the direct column is then MariaDB itself, "+
		"and the PgBouncer column a TCP relay: the direct target's bytes copied to MariaDB by a process that does nothing else, "+
		"the floor of what any proxy on the path costs on this machine.\n\n",
		c, r.opt.Duration, r.opt.Idle)
	fmt.Fprintln(w, "| metric | direct (PostgreSQL; MariaDB rows: MariaDB) | PgBouncer (MariaDB rows: TCP relay) | iamdb | iamdb/direct | iamdb/PgBouncer (MariaDB rows: iamdb/relay) | goal |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---|")
	mariaDirectRes, mariaRelayRes, mariaIAMDBRes := r.get(mariaDirect), r.get(mariaRelay), r.get(mariaIAMDB)
	for _, rw := range rows {
		if (r.opt.Only == "mariadb" && !rw.mariadb) || (r.opt.Only == "postgres" && rw.mariadb) {
			continue
		}
		cells := []string{rw.label}
		vals := map[string]float64{}
		// Values are keyed by column, so the MariaDB rows' ratios and goals
		// compare MariaDB with MariaDB.
		cols := []*result{direct, bouncer, iam}
		if rw.mariadb {
			cols = []*result{mariaDirectRes, mariaRelayRes, mariaIAMDBRes}
		}
		for i, res := range cols {
			if res == nil {
				cells = append(cells, "—")
				continue
			}
			cell, v, ok := cellFor(res, rw)
			cells = append(cells, cell)
			if ok {
				vals[[]string{"direct PostgreSQL", "PgBouncer", "iamdb"}[i]] = v
			}
		}
		ratio := func(base string) string {
			b, okB := vals[base]
			v, okI := vals["iamdb"]
			if !okB || !okI || b == 0 || rw.noRatio {
				return ""
			}
			return fmt.Sprintf("%.2f×", v/b)
		}
		cells = append(cells, ratio("direct PostgreSQL"), ratio("PgBouncer"), goalCell(rw, vals))
		fmt.Fprintln(w, "| "+strings.Join(cells, " | ")+" |")
	}

	var notes []string
	for _, res := range r.results {
		if res.unavailable != "" && res.err == nil {
			notes = append(notes, fmt.Sprintf("%s: not measured (%s).", res.target, res.unavailable))
		}
		if res.err != nil {
			notes = append(notes, fmt.Sprintf("%s: failed to start: %v", res.target, res.err))
		}
		if res.note != "" {
			notes = append(notes, res.target+": "+res.note+".")
		}
		if res.target == "iamdb" && res.logins != nil && res.reused >= 0 {
			total := res.logins.ok + res.logins.failed
			notes = append(notes, fmt.Sprintf("iamdb: %d of the %d logins of the logins row took an idle upstream session (iamdb_upstream_pool_reused_total); the others dialled.",
				min(res.reused, total), total))
		}
		if res.loginsPoolOff != nil {
			for _, e := range res.loginsPoolOff.errors {
				notes = append(notes, fmt.Sprintf("%s login error with the pool off: %s", res.target, e))
			}
		}
		for _, m := range []struct {
			what string
			err  error
		}{{"logins", res.loginsErr}, {"pgbench", res.pgbenchErr}, {"memory", res.memErr}, {"point selects", res.qpsErr}, {"logins with the pool off", res.loginsPoolOffErr}} {
			if m.err != nil {
				notes = append(notes, fmt.Sprintf("%s %s: %v", res.target, m.what, m.err))
			}
		}
		if res.logins != nil {
			for _, e := range res.logins.errors {
				notes = append(notes, fmt.Sprintf("%s login error: %s", res.target, e))
			}
		}
		if res.qps != nil {
			for _, e := range res.qps.errors {
				notes = append(notes, fmt.Sprintf("%s point-select error: %s", res.target, e))
			}
		}
		if res.pgbench != nil && res.pgbench.failed > 0 {
			notes = append(notes, fmt.Sprintf("%s: pgbench reported %d failed transactions", res.target, res.pgbench.failed))
		}
		if res.mem != nil {
			notes = append(notes, fmt.Sprintf("%s RSS: %d KiB before, %d KiB with %d idle connections.",
				res.target, res.mem.beforeKB, res.mem.afterKB, res.mem.conns))
		}
	}
	if len(notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range notes {
			// Multi-line errors (a server's log tail) stay inside their item.
			fmt.Fprintln(w, "- "+strings.ReplaceAll(strings.TrimSpace(n), "\n", "\n  "))
		}
	}
	fmt.Fprintln(w)
}

// errNotRun is the value error of a measurement that never ran (the run
// was interrupted before it).
var errNotRun = errors.New("not run")

// orNotRun is err, or errNotRun when a measurement has neither result nor
// error.
func orNotRun(err error) error {
	if err == nil {
		return errNotRun
	}
	return err
}

// cellFor formats one target's value of a metric.
func cellFor(res *result, rw row) (cell string, v float64, ok bool) {
	if res.unavailable != "" {
		return "n/a (" + res.unavailable + ")", 0, false
	}
	v, applies, err := rw.value(res)
	switch {
	case !applies:
		return "—", 0, false
	case errors.Is(err, errNotRun):
		return "not run", 0, false
	case err != nil:
		return "error (see below)", 0, false
	}
	return fmt.Sprintf(rw.unit, v), v, true
}

func goalCell(rw row, vals map[string]float64) string {
	if rw.goal == "" {
		return ""
	}
	if rw.goalBase == "" {
		return rw.goal
	}
	b, okB := vals[rw.goalBase]
	v, okI := vals["iamdb"]
	if !okB || !okI || b == 0 {
		return rw.goal + ": not measured"
	}
	verdict := rw.goal + ": **missed**"
	if v/b >= rw.goalMin {
		verdict = rw.goal + ": met"
	}
	// The MariaDB rows' goals are against direct: say how far the TCP
	// relay in the middle column got, the most any proxy could.
	if relay, ok := vals["PgBouncer"]; ok && rw.mariadb && rw.goalBase == "direct PostgreSQL" {
		verdict += fmt.Sprintf(" (TCP relay: %.2f×)", relay/b)
	}
	return verdict
}

// describeMachine is the line that says what the numbers were measured on.
func describeMachine(ctx context.Context, pg *postgres, opt options) string {
	cpu := "unknown CPU"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	kernel := "unknown kernel"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = "Linux " + strings.TrimSpace(string(b))
	}
	bouncer := "PgBouncer not installed"
	if bin, err := exec.LookPath(opt.PgBouncer); err == nil {
		if out, err := exec.CommandContext(ctx, bin, "--version").Output(); err == nil {
			bouncer = firstLine(string(out))
		}
	}
	iamdbVersion := "iamdb not built"
	if out, err := exec.CommandContext(ctx, opt.IAMDB, "version").Output(); err == nil {
		iamdbVersion = firstLine(string(out))
	}
	pgVersion := "not measured"
	if pg != nil {
		pgVersion = pg.version
	}
	return fmt.Sprintf("%d CPUs (nproc), %s; %s; PostgreSQL %s; %s; %s; %s",
		runtime.NumCPU(), cpu, kernel, pgVersion, bouncer, iamdbVersion, runtime.Version())
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}
