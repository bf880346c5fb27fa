package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/iamdb/iamdb/internal/server"
)

type serveFlags struct {
	logFormat string
	logLevel  string
}

func newServeCmd(g *globalFlags) *cobra.Command {
	f := &serveFlags{}
	cmd := &cobra.Command{
		Use:   "serve [--config FILE]",
		Short: "Run the instance listeners, metrics and health endpoints",
		Long: `Run iamdb: one listener per instance in the configuration file, plus the
metrics and health endpoint on metrics.listen (/metrics, /healthz, /readyz).

Signals:
  SIGTERM, SIGINT  stop accepting connections, let open sessions finish for up
                   to drain_timeout (default 30s), close the rest, exit 0
  SIGHUP           re-read the configuration file, certificates and backend
                   secrets; open sessions are not touched. A changed listen
                   address or a new instance needs a restart.

Logs go to stderr.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := f.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			return runServe(cmd.Context(), g, logger)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	return cmd
}

func (f *serveFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return nil, usagef("--log-level %q: use debug, info, warn or error", f.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch f.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usagef("--log-format %q: use text or json", f.logFormat)
}

func runServe(ctx context.Context, g *globalFlags, logger *slog.Logger) error {
	if ctx == nil {
		ctx = context.Background()
	}
	path, _ := g.configPath_()
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("iamdb serve needs a configuration file and %s does not exist: run 'iamdb init' to create a data directory, write the file (see docs/configuration.md), and pass it with --config or IAMDB_CONFIG", path)
	}
	cfg, err := g.loadConfig(true)
	if err != nil {
		return err
	}
	// Signals are caught before anything is opened, so a SIGTERM during
	// start-up still ends in an orderly shutdown.
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload := make(chan struct{}, 1)
	go func() {
		for {
			select {
			case <-hup:
				select {
				case reload <- struct{}{}:
				default: // a reload is already pending; one is enough
				}
			case <-ctx.Done():
				return
			}
		}
	}()

	dir, err := g.openDataDir(ctx)
	if err != nil {
		return err
	}
	defer dir.Close()
	logger.Info("starting iamdb", "version", Version, "config", cfg.Path, "data_dir", dir.Path)
	if err := server.Run(ctx, server.Options{
		Config:     cfg,
		ConfigPath: cfg.Path,
		DataDir:    dir,
		Logger:     logger,
		Reload:     reload,
	}); err != nil {
		return err
	}
	logger.Info("iamdb stopped")
	return nil
}
