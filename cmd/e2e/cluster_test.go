package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgjet/pgjet/apply"
	"github.com/pgjet/pgjet/deploy/local"
	"github.com/pgjet/pgjet/stream"
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

// newClusterOnNATSCluster returns a primary and a replica beside the
// three-node NATS cluster of natsCluster (c.nats is nil: use urls).
func newClusterOnNATSCluster(t *testing.T) (*cluster, []*local.NATSProcess, string) {
	t.Helper()
	nodes, urls := natsCluster(t)
	c := &cluster{
		primary: local.NewTestPostgres(t, local.PostgresOptions{Name: "primary"}),
		replica: local.NewTestPostgres(t, local.PostgresOptions{Name: "replica"}),
	}
	c.src, c.dst = c.primary.URL("postgres"), c.replica.URL("postgres")
	return c, nodes, urls
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

// clusterKills is how many nodes TestCluster_KillNode kills, one after
// the other (PGJET_CLUSTER_KILLS): three in make test, one of each role,
// for its time budget; make soak kills ten.
func clusterKills(t *testing.T) int {
	v := os.Getenv("PGJET_CLUSTER_KILLS")
	if v == "" {
		return 3
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("PGJET_CLUSTER_KILLS=%q is not a positive number", v)
	}
	return n
}

// TestCluster_KillNode runs capture and apply against the three-node
// cluster of deploy/nats/hub-cluster-*.conf with --stream-replicas 3, and
// under a pgbench load kills -9, in turn, the stream's leader, the
// consumer's leader and a follower (ten times in a row in make soak), starting each
// node again before the next kill. Capture and apply must never stop, and
// the replica must end identical to the primary (nothing lost, nothing
// applied twice: pgbench_history and nokey have no key, so a duplicate
// shows in their digests).
func TestCluster_KillNode(t *testing.T) {
	t.Parallel()
	c, nodes, urls := newClusterOnNATSCluster(t)
	pgbench(t, c.src, "-i", "-I", "dtp", "-s", "1", "-q")
	exec1(t, c.src, historyIdentity, "CREATE TABLE nokey (a int, b text)", "ALTER TABLE nokey REPLICA IDENTITY FULL")
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

	js := natsJS(t, urls)
	ctx := context.Background()
	st, err := js.Stream(ctx, "PGJET_src")
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*local.NATSProcess{}
	for _, n := range nodes {
		byName[n.Name] = n
	}
	// streamAt waits for the stream to answer and returns its info.
	streamAt := func(what string, ok func(*jetstream.StreamInfo) (bool, string)) *jetstream.StreamInfo {
		var info *jetstream.StreamInfo
		waitFor(t, 2*time.Minute, what, func() (bool, string) {
			checkDaemons(t)
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if info, err = st.Info(rctx); err != nil {
				return false, err.Error()
			}
			return ok(info)
		})
		return info
	}
	script := writeScript(t, noKeyScript)
	roles := []string{"stream leader", "consumer leader", "follower"}
	kills := clusterKills(t)
	for i := 0; i < kills; i++ {
		role := roles[i%len(roles)]
		load := pgbenchAsync(t, c.src, "-n", "-c", "4", "-T", "4", "-b", "tpcb-like@4", "-f", script+"@1")
		first := streamAt("the stream to answer", func(*jetstream.StreamInfo) (bool, string) { return true, "" }).State.LastSeq
		info := streamAt("the load to reach the stream", func(info *jetstream.StreamInfo) (bool, string) {
			return info.State.LastSeq >= first+150, fmt.Sprintf("last sequence %d", info.State.LastSeq)
		})
		if info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			t.Fatalf("stream PGJET_src is not replicated on three nodes: %+v", info.Cluster)
		}
		var name string
		switch role {
		case "stream leader":
			name = info.Cluster.Leader
		case "consumer leader", "follower":
			var ci *jetstream.ConsumerInfo
			waitFor(t, time.Minute, "the consumer's leader", func() (bool, string) {
				checkDaemons(t)
				rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				cons, err := st.Consumer(rctx, apply.ConsumerName("r1"))
				if err != nil {
					return false, err.Error()
				}
				ci = cons.CachedInfo()
				return ci.Cluster != nil && ci.Cluster.Leader != "", "no leader"
			})
			name = ci.Cluster.Leader
			if role == "follower" {
				for _, r := range info.Cluster.Replicas {
					if r.Name != ci.Cluster.Leader {
						name = r.Name
					}
				}
			}
		}
		node := byName[name]
		if node == nil {
			t.Fatalf("%s %q is none of the nodes", role, name)
		}
		before := info.State.LastSeq
		node.Kill()
		t.Logf("kill %d: %s %s at stream sequence %d", i+1, role, name, before)
		if err := <-load; err != nil {
			t.Fatalf("pgbench: %v", err)
		}
		// Capture goes on publishing: a transaction written now reaches
		// the stream through the two nodes left.
		exec1(t, c.src, fmt.Sprintf("INSERT INTO nokey VALUES (%d, 'after kill')", -i-1))
		streamAt("the stream to grow past the kill", func(info *jetstream.StreamInfo) (bool, string) {
			return info.State.LastSeq > before, fmt.Sprintf("last sequence %d", info.State.LastSeq)
		})
		if err := node.Start(); err != nil {
			t.Fatal(err)
		}
		streamAt(name+" to catch up", func(info *jetstream.StreamInfo) (bool, string) {
			if info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != 2 {
				return false, fmt.Sprintf("cluster %+v", info.Cluster)
			}
			for _, r := range info.Cluster.Replicas {
				if !r.Current || r.Offline {
					return false, fmt.Sprintf("replica %s current=%v offline=%v lag=%d", r.Name, r.Current, r.Offline, r.Lag)
				}
			}
			return true, ""
		})
	}
	waitSame(t, 3*time.Minute, c.src, c.dst)
	if n := queryInt(t, c.dst, "SELECT count(*) FROM pgjet.conflicts"); n != 0 {
		t.Errorf("conflicts = %d, want 0: a change was applied twice or lost", n)
	}
	capt.Stop(t)
	app.Stop(t)
}

// startOutageWatch creates table items and starts capture (with this
// --heartbeat) and apply on the cluster at urls, both with a 3s
// --nats-outage-limit and their metrics served at the returned addresses.
func startOutageWatch(t *testing.T, c *cluster, urls, heartbeat string) (capt, app *proc, capAddr, appAddr string) {
	t.Helper()
	exec1(t, c.src, "CREATE TABLE items (id int PRIMARY KEY, v text)")
	copySchema(t, c)
	capAddr, appAddr = metricsAddr(t), metricsAddr(t)
	capt = start(t, "pgjet-capture", bins.capture, "--db", c.src, "--nats", urls, "--name", "src", "--heartbeat", heartbeat,
		"--stream-replicas", "3", "--nats-outage-limit", "3s", "--metrics-addr", capAddr)
	capt.waitLog(t, "capture started")
	app = start(t, "pgjet-apply", bins.apply, "--db", c.dst, "--nats", urls, "--name", "src", "--region", "r1",
		"--nats-outage-limit", "3s", "--metrics-addr", appAddr)
	app.waitLog(t, "apply started")
	return capt, app, capAddr, appAddr
}

// TestCluster_StreamWithoutLeader: two of the three nodes down leave the
// stream without a leader. Past --nats-outage-limit, capture and apply
// each say so in one error line and their /readyz fails; neither stops,
// and both resume by themselves when the nodes come back.
func TestCluster_StreamWithoutLeader(t *testing.T) {
	t.Parallel()
	c, nodes, urls := newClusterOnNATSCluster(t)
	capt, app, capAddr, appAddr := startOutageWatch(t, c, urls, "1s")
	exec1(t, c.src, "INSERT INTO items SELECT g, 'before' FROM generate_series(1, 100) g")
	waitSame(t, time.Minute, c.src, c.dst)

	nodes[0].Kill()
	nodes[1].Kill()
	exec1(t, c.src, "INSERT INTO items VALUES (101, 'while the stream has no leader')")
	for _, d := range []struct {
		p    *proc
		addr string
	}{{capt, capAddr}, {app, appAddr}} {
		waitFor(t, 2*time.Minute, d.p.name+" to report the stream unreachable", func() (bool, string) {
			checkDaemons(t)
			code, body := get(t, d.addr, "/readyz")
			logged := strings.Count(d.p.Output(), "stream PGJET_src unreachable for")
			return logged == 1 && code == http.StatusServiceUnavailable && strings.Contains(body, "unreachable"),
				fmt.Sprintf("logged %d times; /readyz %d %s", logged, code, body)
		})
	}
	for _, n := range nodes[:2] {
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []struct {
		p    *proc
		addr string
	}{{capt, capAddr}, {app, appAddr}} {
		waitFor(t, 2*time.Minute, d.p.name+" to resume", func() (bool, string) {
			checkDaemons(t)
			code, body := get(t, d.addr, "/readyz")
			return strings.Contains(d.p.Output(), "stream reachable again") && code == http.StatusOK, fmt.Sprintf("/readyz %d %s", code, body)
		})
	}
	exec1(t, c.src, "INSERT INTO items VALUES (102, 'after')")
	waitSame(t, time.Minute, c.src, c.dst)
	capt.Stop(t)

	// Restarted without --stream-replicas, capture keeps the stream's
	// three replicas rather than scaling it down to the default one.
	capt = start(t, "pgjet-capture", bins.capture, "--db", c.src, "--nats", urls, "--name", "src", "--heartbeat", "1s")
	capt.waitLog(t, "capture started")
	js := natsJS(t, urls)
	for _, name := range []string{stream.StreamName("src"), stream.SnapshotStreamName("src")} {
		st, err := js.Stream(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		if r := st.CachedInfo().Config.Replicas; r != 3 {
			t.Errorf("stream %s has %d replicas after a restart without --stream-replicas, want 3", name, r)
		}
	}
	exec1(t, c.src, "INSERT INTO items VALUES (103, 'after a restart')")
	waitSame(t, time.Minute, c.src, c.dst)
	capt.Stop(t)
	app.Stop(t)
}

// TestCluster_IdleStreamWithoutLeader: a capture with nothing to publish
// (an idle source, --heartbeat 0) and an applier with nothing to apply
// still say, past --nats-outage-limit, that their stream has no leader,
// and /readyz fails. A leaderless stream's surviving member answers
// stream info with its own state, so that is no sign of a leader.
func TestCluster_IdleStreamWithoutLeader(t *testing.T) {
	t.Parallel()
	c, nodes, urls := newClusterOnNATSCluster(t)
	capt, app, capAddr, appAddr := startOutageWatch(t, c, urls, "0")
	exec1(t, c.src, "INSERT INTO items VALUES (1, 'before')")
	waitSame(t, time.Minute, c.src, c.dst)

	nodes[0].Kill()
	nodes[1].Kill()
	daemons := []struct {
		p    *proc
		addr string
	}{{capt, capAddr}, {app, appAddr}}
	var state []string
	waitFor(t, time.Minute, "capture and apply to report the stream unreachable", func() (bool, string) {
		checkDaemons(t)
		state = state[:0]
		ok := true
		for _, d := range daemons {
			code, body := get(t, d.addr, "/readyz")
			logged := strings.Count(d.p.Output(), "stream PGJET_src unreachable for")
			ok = ok && logged >= 1 && code == http.StatusServiceUnavailable
			state = append(state, fmt.Sprintf("%s logged %d times, /readyz %d %s", d.p.name, logged, code, strings.TrimSpace(body)))
		}
		return ok, strings.Join(state, "; ")
	})
}
