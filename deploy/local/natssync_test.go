package local

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pgjet/pgjet/stream"
)

// TestCheckSync: --check-config's durability line says whether the
// connected nats-server fsyncs JetStream writes before it acknowledges
// them, which only a system-account user can read, and says it cannot tell
// otherwise.
func TestCheckSync(t *testing.T) {
	for _, tc := range []struct {
		name     string
		interval time.Duration
		system   bool
		ok       bool
		want     string
	}{
		{"always", 0, true, true, "fsyncs each JetStream write before acknowledging it"},
		{"interval", time.Minute, true, false, "acknowledges JetStream writes before it fsyncs them (sync_interval 1m0s)"},
		{"not system user", time.Minute, false, false, "cannot tell whether nats-server"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := NewTestNATS(t, NATSOptions{Name: "sync", SyncInterval: tc.interval, User: "app", Password: "app", SystemUser: "sys", SystemPassword: "sys"})
			user := "app"
			if tc.system {
				user = "sys"
			}
			nc, err := nats.Connect(n.ClientURL(), nats.UserInfo(user, user))
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			r := stream.CheckSync(nc)
			t.Logf("%+v", r)
			if !r.OK || r.Warn == tc.ok {
				t.Errorf("OK %v, Warn %v; want OK true, Warn %v", r.OK, r.Warn, !tc.ok)
			}
			if !strings.Contains(r.Detail, tc.want) || !strings.Contains(r.Detail, "sync_interval") {
				t.Errorf("detail %q lacks %q", r.Detail, tc.want)
			}
		})
	}
}
