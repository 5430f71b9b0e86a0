package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgjet/pgjet/deploy/local"
	"github.com/pgjet/pgjet/stream"
)

// TestRegions_MirrorLimits: a region's mirror of the change stream has
// limits (by default the capture's default retention, 168h), not none, so
// it does not grow for ever; --mirror-max-age and --mirror-max-bytes set
// them, and a restart with other values updates the existing mirror.
func TestRegions_MirrorLimits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	top := local.NewTestTopology(t, local.TopologyOptions{Hub: "hub", Regions: []string{"r1"}})
	src := local.NewTestPostgres(t, local.PostgresOptions{Name: "primary"}).URL("postgres")
	dst := local.NewTestPostgres(t, local.PostgresOptions{Name: "replica-r1"}).URL("postgres")
	exec1(t, src, "CREATE TABLE t (id int PRIMARY KEY)")
	exec1(t, dst, "CREATE TABLE t (id int PRIMARY KEY)")
	capt := start(t, "pgjet-capture", bins.capture, "--db", src, "--nats", top.Hub.ClientURL(), "--name", "src", "--heartbeat", "1s")
	capt.waitLog(t, "capture started")
	js := natsJSDomain(t, top.Regions["r1"].ClientURL(), "r1")
	apply := func(extra ...string) *proc {
		p := start(t, "pgjet-apply r1", bins.apply, append([]string{"--db", dst, "--nats", top.Regions["r1"].ClientURL(),
			"--name", "src", "--region", "r1", "--upstream-domain", "hub"}, extra...)...)
		p.waitLog(t, "apply started")
		return p
	}
	mirror := func() jetstream.StreamConfig {
		t.Helper()
		st, err := js.Stream(ctx, stream.StreamName("src"))
		if err != nil {
			t.Fatal(err)
		}
		cfg := st.CachedInfo().Config
		if cfg.Mirror == nil {
			t.Fatalf("stream %s in r1 is not a mirror", cfg.Name)
		}
		return cfg
	}

	app := apply()
	exec1(t, src, "INSERT INTO t SELECT generate_series(1, 10)")
	waitSame(t, 60*time.Second, src, dst)
	if cfg := mirror(); cfg.MaxAge != 168*time.Hour || cfg.MaxBytes != -1 {
		t.Errorf("new mirror keeps max age %s, max bytes %d; want 168h and unlimited (-1)", cfg.MaxAge, cfg.MaxBytes)
	}

	app.Stop(t)
	apply("--mirror-max-age", "2h", "--mirror-max-bytes", "100000000")
	if cfg := mirror(); cfg.MaxAge != 2*time.Hour || cfg.MaxBytes != 100000000 {
		t.Errorf("mirror after a restart with other limits keeps max age %s, max bytes %d; want 2h and 100000000", cfg.MaxAge, cfg.MaxBytes)
	}
	exec1(t, src, "INSERT INTO t SELECT generate_series(11, 20)")
	waitSame(t, 60*time.Second, src, dst)
}
