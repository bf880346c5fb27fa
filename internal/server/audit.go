package server

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/iamdb/iamdb/internal/audit"
	"github.com/iamdb/iamdb/internal/config"
	"github.com/iamdb/iamdb/internal/sts"
)

// AuditFile is where the audit log of a data directory lives: audit.file
// when the configuration names one, else audit.jsonl in the data
// directory actually opened (which --data-dir may have moved away from the
// configuration's data_dir).
func AuditFile(cfg *config.Config, dataDir string) string {
	return audit.ResolveFile(cfg.Audit.File, cfg.DataDir, dataDir)
}

// openAudit opens the audit log every producer of this process writes to
// and exposes its failures as iamdb_audit_write_errors_total.
func (s *server) openAudit() error {
	path := AuditFile(s.cfg, s.dir.Path)
	sink, err := audit.OpenFile(path, audit.FileOptions{
		FsyncInterval: s.cfg.Audit.FsyncInterval.D(),
		MaxSize:       int64(s.cfg.Audit.MaxSize),
		FailClosed:    s.cfg.Audit.FailClosed,
		Logger:        s.log.With("component", "audit"),
	})
	if err != nil {
		return fmt.Errorf("opening the audit log (audit.file): %w", err)
	}
	s.audit = sink
	s.metrics.Registry().MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "iamdb_audit_write_errors_total",
			Help: "Audit events that could not be written to the audit log.",
		}, func() float64 { return float64(sink.WriteErrors()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "iamdb_audit_events_total",
			Help: "Audit events written to the audit log.",
		}, func() float64 { return float64(sink.Written()) }),
	)
	s.log.Info("audit log open", "file", path, "fail_closed", s.cfg.Audit.FailClosed)
	return nil
}

// auditEmitter is what the listeners and the STS API write to.
func (s *server) auditEmitter() audit.Emitter {
	if s.audit == nil {
		return audit.Nop{}
	}
	return s.audit
}

// statementPolicy is an instance's statement audit setting.
func statementPolicy(in config.Instance) audit.StatementPolicy {
	return audit.StatementPolicy{
		All:        in.AuditStatements.All,
		Users:      append([]string(nil), in.AuditStatements.Users...),
		Parameters: in.AuditParameters,
	}
}

// auditSTSCall records one STS call.
func (s *server) auditSTSCall(rec sts.CallRecord) {
	if err := s.auditEmitter().Emit(context.Background(), audit.STSEvent(rec)); err != nil {
		s.log.Error("audit event not recorded", "event", rec.Action, "request_id", rec.RequestID, "err", err)
	}
}

// closeAudit flushes and closes the log once every producer stopped:
// sessions the listeners just closed still write their disconnect events,
// so wait briefly for them.
func (s *server) closeAudit() {
	if s.audit == nil {
		return
	}
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		n := 0
		for _, l := range s.listeners {
			if l.proxy != nil {
				n += l.proxy.ActiveSessions()
			}
		}
		if n == 0 {
			break
		}
	}
	if err := s.audit.Close(); err != nil {
		s.log.Error("closing the audit log", "err", err)
	}
	s.audit = nil
}
