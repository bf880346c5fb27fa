package server

import (
	"context"
	"slices"

	"github.com/iamdb/iamdb/internal/config"
)

// reload is the SIGHUP path. Nothing it does touches a live session: new
// settings reach the listeners through their Update, which applies to
// sessions accepted afterwards.
func (s *server) reload(ctx context.Context) {
	s.log.Info("reloading the configuration, certificates and secrets")
	next := s.cfg
	if s.opt.ConfigPath != "" {
		cfg, err := config.Load(s.opt.ConfigPath)
		if err != nil {
			// config errors carry the line of each problem.
			s.log.Error("configuration not reloaded; still running with the previous one", "err", err)
			return
		}
		next = cfg
	}
	next = s.keepUnreloadable(next)
	s.reloadAdmission(next)

	if err := s.ensureServerCert(next); err != nil {
		s.log.Error("server certificate not renewed", "err", err)
	}
	for key, c := range s.certs {
		if err := c.load(); err != nil {
			s.log.Error("server certificate not reloaded; still serving the previous one", "cert", key[0], "err", err)
		}
	}

	byName := map[string]config.Instance{}
	for _, in := range next.Instances {
		byName[in.Name] = in
	}
	for _, l := range s.listeners {
		in, ok := byName[l.name]
		if !ok {
			continue // reported by keepUnreloadable
		}
		cert, err := s.certificateFor(in)
		if err != nil {
			l.log.Error("instance not reloaded: its certificate cannot be loaded", "err", err)
			continue
		}
		if err := l.backend.Reload(ctx, in); err != nil {
			l.log.Error("instance not reloaded: backend login settings", "err", err)
			continue
		}
		pc, err := s.proxyConfig(next, in, cert, l.backend)
		if err != nil {
			l.log.Error("instance not reloaded", "err", err)
			continue
		}
		l.update(pc)
		if fp, ok := l.proxy.(interface{ FlushPool() }); ok && in.BackendAuth != l.inst.BackendAuth {
			// Idle upstream sessions were opened under the previous backend
			// login settings.
			fp.FlushPool()
		}
		l.inst, l.cert = in, cert
		l.log.Info("instance reloaded", "endpoints", in.Endpoints, "upstream", in.Upstream.Address)
	}
	s.cfg = next
	s.log.Info("reload done")
}

// keepUnreloadable returns next with the settings a running process cannot
// change put back to the ones in force, logging each as needing a restart.
// Instances added to the file are left out until a restart; instances
// removed from it keep serving.
func (s *server) keepUnreloadable(next *config.Config) *config.Config {
	cur := s.cfg
	out := *next
	restart := func(setting, was, now string) {
		s.log.Warn("this change needs a restart of iamdb serve to take effect", "setting", setting, "in_force", was, "in_file", now)
	}
	if next.DataDir != cur.DataDir {
		restart("data_dir", cur.DataDir, next.DataDir)
		out.DataDir = cur.DataDir
	}
	if next.Store != cur.Store {
		// The DSN may hold a password: name the setting, not the values.
		restart("store", "(previous)", "(changed)")
		out.Store = cur.Store
	}
	if next.Metrics.Listen != cur.Metrics.Listen {
		restart("metrics.listen", cur.Metrics.Listen, next.Metrics.Listen)
		out.Metrics = cur.Metrics
	}
	if next.Redis != cur.Redis {
		// The URL may hold a password: name the setting, not the values.
		restart("redis", "(previous)", "(changed)")
		out.Redis = cur.Redis
	}
	if next.Partition != cur.Partition {
		restart("partition", cur.Partition, next.Partition)
		out.Partition = cur.Partition
	}

	inFile := map[string]config.Instance{}
	for _, in := range next.Instances {
		inFile[in.Name] = in
	}
	out.Instances = nil
	for _, l := range s.listeners {
		in, ok := inFile[l.name]
		if !ok {
			s.log.Warn("instance removed from the configuration keeps serving until iamdb serve restarts", "instance", l.name)
			out.Instances = append(out.Instances, l.inst)
			continue
		}
		if in.Engine != l.inst.Engine {
			restart("instances."+in.Name+".engine", l.inst.Engine, in.Engine)
			out.Instances = append(out.Instances, l.inst)
			continue
		}
		if in.Listen != l.inst.Listen {
			restart("instances."+in.Name+".listen", l.inst.Listen, in.Listen)
			in.Listen = l.inst.Listen
		}
		out.Instances = append(out.Instances, in)
	}
	for _, in := range next.Instances {
		if !slices.ContainsFunc(s.listeners, func(l *listener) bool { return l.name == in.Name }) {
			s.log.Warn("new instance in the configuration starts when iamdb serve restarts", "instance", in.Name, "listen", in.Listen)
		}
	}
	return &out
}
