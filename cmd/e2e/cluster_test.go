package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgjet/pgjet/deploy/local"
)

// natsCluster runs the three nodes of deploy/nats/hub-cluster-*.conf as
// standalone nats-server processes on local ports, and returns them with
// the comma-separated client URLs of all three.
func natsCluster(t *testing.T) ([]*local.NATSProcess, string) {
	t.Helper()
	ports := make([]int, 9) // client, route and leafnode port of each node
	for i := range ports {
		p, err := local.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = p
	}
	var nodes []*local.NATSProcess
	var urls []string
	for i := 0; i < 3; i++ {
		b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "nats", fmt.Sprintf("hub-cluster-%d.conf", i+1)))
		if err != nil {
			t.Fatal(err)
		}
		conf := string(b)
		subst := [][2]string{
			{"listen: 0.0.0.0:4222", fmt.Sprintf("listen: 127.0.0.1:%d", ports[i])},
			{"http: 0.0.0.0:8222\n", ""},
			{"store_dir: /var/lib/nats/jetstream", "store_dir: " + t.TempDir()},
			{"listen: 0.0.0.0:6222", fmt.Sprintf("listen: 127.0.0.1:%d", ports[3+i])},
			{"port: 7422", fmt.Sprintf("port: %d", ports[6+i])},
		}
		for n := 0; n < 3; n++ {
			subst = append(subst, [2]string{fmt.Sprintf("nats-route://hub-%d.example:6222", n+1), fmt.Sprintf("nats-route://127.0.0.1:%d", ports[3+n])})
		}
		for _, s := range subst {
			if !strings.Contains(conf, s[0]) {
				t.Fatalf("hub-cluster-%d.conf lacks %q, which the test replaces", i+1, s[0])
			}
			conf = strings.Replace(conf, s[0], s[1], 1)
		}
		url := fmt.Sprintf("nats://127.0.0.1:%d", ports[i])
		nodes = append(nodes, local.NewTestNATSProcess(t, fmt.Sprintf("hub-%d", i+1), conf, url))
		urls = append(urls, url)
	}
	return nodes, strings.Join(urls, ",")
}

// warnings keeps the first warnings and errors a daemon logged.
func warnings(out string) string {
	var b strings.Builder
	for _, l := range strings.Split(out, "\n") {
		if (strings.Contains(l, `"level":"warn"`) || strings.Contains(l, `"level":"error"`)) && b.Len() < 6000 {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// TestCluster_KillNode runs capture and apply against the three-node
// cluster of deploy/nats/hub-cluster-*.conf with --stream-replicas 3, and
// kills -9 the stream's leader under a pgbench load: the replica must end
// identical to the primary, with no daemon stopped (nothing lost, nothing
// applied twice: pgbench_history and nokey have no key, so a duplicate
// shows in their digests). The node then comes back and catches up.
func TestCluster_KillNode(t *testing.T) {
	nodes, urls := natsCluster(t)
	c := &cluster{
		primary: local.NewTestPostgres(t, local.PostgresOptions{Name: "primary"}),
		replica: local.NewTestPostgres(t, local.PostgresOptions{Name: "replica"}),
	}
	c.src, c.dst = c.primary.URL("postgres"), c.replica.URL("postgres")
	pgbench(t, c.src, "-i", "-I", "dtp", "-s", "1", "-q")
	exec1(t, c.src, "CREATE TABLE nokey (a int, b text)", "ALTER TABLE nokey REPLICA IDENTITY FULL")
	copySchema(t, c)

	capt := start(t, "pgjet-capture", bins.capture, "--db", c.src, "--nats", urls, "--name", "src", "--heartbeat", "1s", "--stream-replicas", "3")
	capt.waitLog(t, "capture started")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("capture warnings:\n%s", warnings(capt.Output()))
		}
	})
	app := start(t, "pgjet-apply", bins.apply, "--db", c.dst, "--nats", urls, "--name", "src", "--region", "r1")
	app.waitLog(t, "apply started")
	pgbench(t, c.src, "-i", "-I", "g", "-s", "1", "-q")

	load := pgbenchAsync(t, c.src, "-n", "-c", "4", "-T", "12", "-b", "tpcb-like@4", "-f", writeScript(t, noKeyScript)+"@1")
	// Kill the node that leads the stream once the load is flowing.
	js := natsJS(t, urls)
	ctx := context.Background()
	st, err := js.Stream(ctx, "PGJET_src")
	if err != nil {
		t.Fatal(err)
	}
	var info *jetstream.StreamInfo
	waitFor(t, time.Minute, "the load to reach the stream", func() (bool, string) {
		checkDaemons(t)
		if info, err = st.Info(ctx); err != nil {
			return false, err.Error()
		}
		return info.State.LastSeq >= 300, fmt.Sprintf("last sequence %d", info.State.LastSeq)
	})
	if info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("stream PGJET_src is not replicated on three nodes: %+v", info.Cluster)
	}
	var killed *local.NATSProcess
	for _, n := range nodes {
		if n.Name == info.Cluster.Leader {
			killed = n
		}
	}
	if killed == nil {
		t.Fatalf("stream leader %q is none of the nodes", info.Cluster.Leader)
	}
	before := info.State.LastSeq
	killed.Kill()
	t.Logf("killed stream leader %s at stream sequence %d", killed.Name, before)
	if err := <-load; err != nil {
		t.Fatalf("pgbench: %v", err)
	}
	waitSame(t, 3*time.Minute, c.src, c.dst)
	if n := queryInt(t, c.dst, "SELECT count(*) FROM pgjet.conflicts"); n != 0 {
		t.Errorf("conflicts = %d, want 0: a change was applied twice or lost", n)
	}
	if info, err := st.Info(ctx); err == nil {
		t.Logf("stream sequence %d after the load (leader %s)", info.State.LastSeq, info.Cluster.Leader)
		if info.State.LastSeq <= before {
			t.Errorf("the stream did not grow after its leader was killed")
		}
	}
	if err := killed.Start(); err != nil {
		t.Fatal(err)
	}
	exec1(t, c.src, "INSERT INTO nokey VALUES (-1, 'after the node came back')")
	waitSame(t, time.Minute, c.src, c.dst)
	capt.Stop(t)
	app.Stop(t)
}
