package config

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestLimitsSettings(t *testing.T) {
	const inst = "instances:\n  - {name: a, engine: postgres, resource_id: db-A, listen: 127.0.0.1:1, upstream: {address: 127.0.0.1:2}, backend_auth: {mode: trust}%s}\n"
	def, err := Parse([]byte(fmt.Sprintf(inst, "")))
	if err != nil {
		t.Fatal(err)
	}
	l := def.Instances[0].Limits
	fl := l.FailedLogins
	if !l.On() || l.NewLoginsPerSecond != DefaultNewLoginsPerSecond || l.PrincipalsPerSecond != DefaultPrincipalsPerSecond ||
		l.MaxConnections != DefaultMaxConnections || l.NewLoginsPerPrincipalPerSecond != 0 || l.MaxConnectionsPerUser != 0 ||
		*fl.BlockAfter != DefaultFailedLoginsBlock || *fl.BackoffAfter != DefaultFailedLoginsBackoff ||
		fl.BlockFor != DefaultBlockFor || fl.Window != DefaultFailureWindow || fl.Backoff != DefaultBackoff {
		t.Errorf("limits defaults: %+v %+v", l, fl)
	}
	if def.RedisFailure != "local" {
		t.Errorf("redis_failure default %q", def.RedisFailure)
	}

	set, err := Parse([]byte("redis: redis://127.0.0.1:6390/2\nredis_failure: refuse\n" + fmt.Sprintf(inst,
		", limits: {enabled: false, new_logins_per_second: 50, principals_per_second: 5, new_logins_per_principal_per_second: 2,"+
			" max_connections: 10, max_connections_per_user: 3, failed_logins: {block_after: 0, block_for: 1m, window: 30s, backoff_after: 0, backoff: 250ms}}")))
	if err != nil {
		t.Fatal(err)
	}
	l, fl = set.Instances[0].Limits, set.Instances[0].Limits.FailedLogins
	if l.On() || l.NewLoginsPerSecond != 50 || l.PrincipalsPerSecond != 5 || l.NewLoginsPerPrincipalPerSecond != 2 ||
		l.MaxConnections != 10 || l.MaxConnectionsPerUser != 3 || *fl.BlockAfter != 0 || *fl.BackoffAfter != 0 ||
		fl.BlockFor.D() != time.Minute || fl.Window.D() != 30*time.Second || fl.Backoff.D() != 250*time.Millisecond {
		t.Errorf("limits settings: %+v %+v", l, fl)
	}
	if set.Redis != "redis://127.0.0.1:6390/2" || set.RedisFailure != "refuse" {
		t.Errorf("redis settings: %q %q", set.Redis, set.RedisFailure)
	}

	for _, tc := range []struct {
		name, doc string
		want      []string
	}{
		{"unknown limit", fmt.Sprintf(inst, ", limits: {max_conections: 3}"), []string{"unknown key max_conections"}},
		{"negative per user", fmt.Sprintf(inst, ", limits: {max_connections_per_user: -1}"), []string{"instances[0].limits", "negative"}},
		{"negative per principal", fmt.Sprintf(inst, ", limits: {new_logins_per_principal_per_second: -2}"), []string{"instances[0].limits", "negative"}},
		{"negative block_after", fmt.Sprintf(inst, ", limits: {failed_logins: {block_after: -1}}"), []string{"instances[0].limits.failed_logins", "negative"}},
		{"negative block_for", fmt.Sprintf(inst, ", limits: {failed_logins: {block_for: -1s}}"), []string{"instances[0].limits.failed_logins"}},
		{"enabled not a bool", fmt.Sprintf(inst, ", limits: {enabled: sometimes}"), []string{"wrong type"}},
		{"bad redis_failure", "redis_failure: ignore\n", []string{"redis_failure", `"ignore"`, "local", "refuse"}},
		{"bad redis url", "redis: 127.0.0.1:6379\n", []string{"redis", "redis://"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
