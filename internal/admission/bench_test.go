package admission

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkAdmission measures the admission work of one login, in memory
// and against a real Redis: a new token (every rate checked and charged),
// a reused token, and a connection slot taken and given back.
func BenchmarkAdmission(b *testing.B) {
	url, _ := redisURL(b)
	lim := Limits{NewLoginsPerSecond: 1 << 30, PrincipalsPerSecond: 1 << 30, NewLoginsPerPrincipalPerSecond: 1 << 30,
		MaxConnections: 1 << 30, MaxConnectionsPerUser: 1 << 30}
	for _, mode := range []string{"memory", "redis"} {
		ctl := func(b *testing.B) *Controller {
			if mode == "memory" {
				return New(instanceName(b), lim, Options{})
			}
			return newReplica(b, instanceName(b), lim, replicaOptions{url: url}).ctl
		}
		b.Run(mode+"/new-token", func(b *testing.B) {
			c := ctl(b)
			now := time.Now()
			i := 0
			for b.Loop() {
				i++
				if err := c.AdmitLogin(bg, "10.0.0.1", decision("alice", fmt.Sprint(i), now)); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(mode+"/reused-token", func(b *testing.B) {
			c := ctl(b)
			d := decision("alice", "one", time.Now())
			for b.Loop() {
				if err := c.AdmitLogin(bg, "10.0.0.1", d); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(mode+"/connection", func(b *testing.B) {
			c := ctl(b)
			for b.Loop() {
				if err := c.Screen(bg, "10.0.0.1"); err != nil {
					b.Fatal(err)
				}
				release, err := c.Admit(bg, "10.0.0.1", "app")
				if err != nil {
					b.Fatal(err)
				}
				release()
			}
		})
	}
}
