package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/iamdb/iamdb/internal/audit"
	"github.com/iamdb/iamdb/internal/config"
	"github.com/iamdb/iamdb/internal/datadir"
	"github.com/iamdb/iamdb/internal/identity"
)

const defaultConfigFile = "iamdb.yaml"

// configPath is --config, else $IAMDB_CONFIG, else ./iamdb.yaml; explicit
// reports whether the user named it (then it must exist).
func (g *globalFlags) configPath_() (path string, explicit bool) {
	if g.configPath != "" {
		return g.configPath, true
	}
	if p := os.Getenv("IAMDB_CONFIG"); p != "" {
		return p, true
	}
	return defaultConfigFile, false
}

// loadConfig loads the configuration. A missing default file is not an
// error for commands that can run on the data dir alone (required=false).
func (g *globalFlags) loadConfig(required bool) (*config.Config, error) {
	if g.cfg != nil {
		return g.cfg, nil
	}
	path, explicit := g.configPath_()
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) && !explicit && !required {
		cfg, err := config.Parse([]byte("{}\n"))
		if err != nil {
			return nil, err
		}
		g.cfg = cfg
		return cfg, nil
	}
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	g.cfg = cfg
	return cfg, nil
}

// dataDir is --data-dir, else $IAMDB_DATA_DIR, else the configuration's.
func (g *globalFlags) dataDir_() (string, error) {
	if g.dataDir != "" {
		return g.dataDir, nil
	}
	if d := os.Getenv("IAMDB_DATA_DIR"); d != "" {
		return d, nil
	}
	cfg, err := g.loadConfig(false)
	if err != nil {
		return "", err
	}
	return cfg.DataDir, nil
}

// openDataDir opens the data directory and its identity store.
func (g *globalFlags) openDataDir(ctx context.Context) (*datadir.Dir, error) {
	dir, err := g.dataDir_()
	if err != nil {
		return nil, err
	}
	cfg, err := g.loadConfig(false)
	if err != nil {
		return nil, err
	}
	return datadir.Open(ctx, dir, cfg.Store, cfg.Partition)
}

// identityStore is d's identity store with every write recorded in the
// audit log (iam.iamdb events attributed to the operator), so management
// commands are audited whatever they change.
func (g *globalFlags) identityStore(d *datadir.Dir) identity.Store {
	return audit.NewStore(d.Store, g.auditLog(d.Path), audit.LocalOperator(), "iamdb-cli/"+Version)
}

// auditLog is the audit log of the data directory dataDir, opened per
// event: a command holds nothing open that `iamdb serve` also writes.
func (g *globalFlags) auditLog(dataDir string) audit.Emitter {
	cfg := g.cfg
	if cfg == nil {
		cfg = &config.Config{}
	}
	return audit.OneShot{
		Path: audit.ResolveFile(cfg.Audit.File, cfg.DataDir, dataDir),
		Options: audit.FileOptions{
			FailClosed: cfg.Audit.FailClosed,
			MaxSize:    int64(cfg.Audit.MaxSize),
			Logger:     slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		},
	}
}

// account is the account commands act in: the configuration's account_id,
// else the data dir's default account.
func (g *globalFlags) account(d *datadir.Dir) string {
	if g.cfg != nil && g.cfg.AccountID != "" {
		return g.cfg.AccountID
	}
	return d.Meta.AccountID
}

// outputFlag is --output text|json on commands that print records.
type outputFlag struct{ format string }

func (o *outputFlag) json() (bool, error) {
	switch o.format {
	case "", "text", "table":
		return false, nil
	case "json":
		return true, nil
	}
	return false, usagef("--output %q: use text or json", o.format)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "    ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("writing JSON: %w", err)
	}
	return nil
}
