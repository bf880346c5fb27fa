package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/iamdb/iamdb/internal/audit"
)

func newAuditCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Read, search and verify the audit trail",
		Long: `The audit trail records every database login attempt (accepted or refused,
with the reason), every session end, statements of sessions under statement
audit, every STS call and every change to identities, as CloudTrail-shaped
JSON lines in audit.file (default DATA_DIR/audit.jsonl, rotated to
audit.jsonl.1, .2, … oldest first).

  iamdb audit tail [-f] [-n N]     the last events; -f follows new ones
  iamdb audit query --principal …  events matching filters, as a table or JSON lines
  iamdb audit verify               check the hash chain: edited, removed,
                                   reordered or cut-off events are named by
                                   file and line`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newAuditTailCmd(g), newAuditQueryCmd(g), newAuditVerifyCmd(g))
	return cmd
}

// auditPath is the log the commands read: audit.file, or audit.jsonl in
// the data directory in use.
func (g *globalFlags) auditPath() (string, error) {
	dir, err := g.dataDir_()
	if err != nil {
		return "", err
	}
	cfg, err := g.loadConfig(false)
	if err != nil {
		return "", err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	return audit.ResolveFile(cfg.Audit.File, cfg.DataDir, abs), nil
}

func newAuditTailCmd(g *globalFlags) *cobra.Command {
	var (
		follow bool
		n      int
		out    outputFlag
	)
	cmd := &cobra.Command{
		Use:   "tail [-f] [-n N] [--output json]",
		Short: "Print the last events of the audit trail; -f follows new events",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := out.json()
			if err != nil {
				return err
			}
			if n < 0 {
				return usagef("-n %d: give a number of events, 0 or more", n)
			}
			path, err := g.auditPath()
			if err != nil {
				return err
			}
			p := newAuditPrinter(cmd.OutOrStdout(), asJSON)
			// Only the current file matters for the last events unless it
			// holds fewer than n; reading all files keeps it simple.
			var last []audit.Record
			err = audit.Read(path, func(r audit.Record) error {
				if n == 0 {
					return nil
				}
				if len(last) == n {
					last = last[1:]
				}
				last = append(last, r)
				return nil
			})
			if err != nil {
				return err
			}
			for _, r := range last {
				p.print(r)
			}
			if err := p.flush(); err != nil {
				return err
			}
			if !follow {
				return nil
			}
			st, err := os.Stat(path)
			var offset int64
			if err == nil {
				offset = st.Size()
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return audit.Follow(ctx, path, offset, 250*time.Millisecond, func(r audit.Record) error {
				p.print(r)
				return p.flush()
			})
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing events as they are written")
	cmd.Flags().IntVarP(&n, "lines", "n", 10, "how many of the last events to print")
	cmd.Flags().StringVar(&out.format, "output", "text", "text or json (one event per line)")
	return cmd
}

func newAuditQueryCmd(g *globalFlags) *cobra.Command {
	var (
		f            audit.Filter
		since, until string
		out          outputFlag
	)
	cmd := &cobra.Command{
		Use:   "query [--principal ARN] [--user NAME] [--db-user U] [--instance I] [--since T] [--until T] [--event NAME] [--failed] [--output json]",
		Short: "Print the events that match every filter given",
		Long: `Print the events that match every filter given, oldest first, as a table or
(--output json) as JSON lines.

  --principal ARN   the principal's ARN (user or role session), or a role's
                    ARN for all its sessions
  --user NAME       an IAM user, a role, a source identity or a federated subject
  --db-user U       the database user of connect/disconnect/statement events
  --instance I      the instance
  --since/--until T RFC 3339 time (2026-01-02T15:04:05Z), a date (2026-01-02)
                    or a duration back from now (90m, 24h)
  --event NAME      connect, disconnect, statement, AssumeRole, CreateAccessKey …
  --failed          refused or failed calls only (events with an errorCode)`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := out.json()
			if err != nil {
				return err
			}
			now := time.Now()
			if f.Since, err = parseAuditTime("--since", since, now); err != nil {
				return err
			}
			if f.Until, err = parseAuditTime("--until", until, now); err != nil {
				return err
			}
			path, err := g.auditPath()
			if err != nil {
				return err
			}
			p := newAuditPrinter(cmd.OutOrStdout(), asJSON)
			if err := audit.Read(path, func(r audit.Record) error {
				if f.Match(r.Event) {
					p.print(r)
				}
				return nil
			}); err != nil {
				return err
			}
			return p.flush()
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.Principal, "principal", "", "principal ARN (or a role ARN for all its sessions)")
	fl.StringVar(&f.User, "user", "", "IAM user, role, source identity or federated subject name")
	fl.StringVar(&f.DBUser, "db-user", "", "database user")
	fl.StringVar(&f.Instance, "instance", "", "instance name")
	fl.StringVar(&since, "since", "", "only events at or after this time (RFC 3339, date, or a duration ago)")
	fl.StringVar(&until, "until", "", "only events before this time")
	fl.StringVar(&f.Event, "event", "", "event name")
	fl.BoolVar(&f.Failed, "failed", false, "only events with an error code")
	fl.StringVar(&out.format, "output", "text", "text (a table) or json (one event per line)")
	return cmd
}

func parseAuditTime(flag, v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	if t, err := time.Parse("2006-01-02", v); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, usagef("%s %q: use an RFC 3339 time (2026-01-02T15:04:05Z), a date (2026-01-02) or a duration ago (90m)", flag, v)
}

func newAuditVerifyCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "verify",
		Short: "Check the audit trail's hash chain across all its files",
		Long: `Check the audit trail's hash chain across all its files, oldest first. Exits
non-zero naming the first broken position (file and line) when an event was
edited, removed or reordered, or events were cut off from the end.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, err := g.auditPath()
			if err != nil {
				return err
			}
			res, err := audit.Verify(path)
			var ve *audit.VerifyError
			if errors.As(err, &ve) {
				return fmt.Errorf("audit trail broken at %s (%s): %s", ve.Position, ve.File, ve.Reason)
			}
			if err != nil {
				return err
			}
			files := "files"
			if res.Files == 1 {
				files = "file"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "OK: %d events in %d %s\n", res.Events, res.Files, files)
			return nil
		},
	}
}

// auditPrinter prints events as a table or as JSON lines (the stored
// event, hashes included).
type auditPrinter struct {
	w    io.Writer
	json bool
	tw   *tabwriter.Writer
	head bool
}

func newAuditPrinter(w io.Writer, asJSON bool) *auditPrinter {
	p := &auditPrinter{w: w, json: asJSON}
	if !asJSON {
		p.tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	}
	return p
}

func (p *auditPrinter) print(r audit.Record) {
	if p.json {
		p.w.Write(r.Raw)
		p.w.Write([]byte{'\n'})
		return
	}
	if !p.head {
		fmt.Fprintln(p.tw, "TIME\tEVENT\tPRINCIPAL\tINSTANCE\tDB USER\tSOURCE IP\tRESULT")
		p.head = true
	}
	e := r.Event
	who := "-"
	if u := e.UserIdentity; u != nil {
		switch {
		case u.ARN != "":
			who = u.ARN
		case u.UserName != "":
			who = u.Type + ":" + u.UserName
		default:
			who = u.Type
		}
	}
	result := "ok"
	if e.ErrorCode != "" {
		result = e.ErrorCode
		if e.ErrorMessage != "" {
			result += ": " + oneLine(e.ErrorMessage, 80)
		}
	}
	name := e.EventName
	if st, ok := e.RequestParameters["statement"].(string); ok {
		name += " " + oneLine(st, 60)
	}
	fmt.Fprintf(p.tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.EventTime, name, who, orDash(e.RequestParameters["instance"]),
		orDash(e.RequestParameters["dbUser"]), orDash(e.SourceIPAddress), result)
}

func (p *auditPrinter) flush() error {
	if p.tw != nil {
		return p.tw.Flush()
	}
	return nil
}

func orDash(v any) string {
	s, _ := v.(string)
	if s == "" {
		return "-"
	}
	return s
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		s = string(r[:n]) + "…"
	}
	return s
}
