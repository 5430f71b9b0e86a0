package local

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsConfDir holds the example server configs of the three-region layout.
const natsConfDir = "../nats"

// TestNATSConfigs parses deploy/nats/*.conf as nats-server would, checks
// the settings pgjet relies on, then runs the three servers from them (on
// local ports, with the hub address swapped for 127.0.0.1) and checks that
// the hub reaches every region's JetStream domain through the leafnodes.
func TestNATSConfigs(t *testing.T) {
	load := func(t *testing.T, name string) *server.Options {
		t.Helper()
		o, err := server.ProcessConfigFile(filepath.Join(natsConfDir, name+".conf"))
		if err != nil {
			t.Fatalf("parse %s.conf: %v", name, err)
		}
		if got := o.ServerName; got != name {
			t.Errorf("%s.conf: server_name = %q, want %q", name, got, name)
		}
		if !o.JetStream {
			t.Errorf("%s.conf: jetstream not enabled", name)
		}
		if got := o.JetStreamDomain; got != name {
			t.Errorf("%s.conf: jetstream domain = %q, want %q", name, got, name)
		}
		if !o.SyncAlways {
			t.Errorf("%s.conf: jetstream sync_interval is not always: an acknowledged message could be lost in a host crash", name)
		}
		if o.StoreDir == "" {
			t.Errorf("%s.conf: no jetstream store_dir", name)
		}
		if got, want := o.MaxPayload, int32(DefaultMaxPayload); got != want {
			t.Errorf("%s.conf: max_payload = %d, want %d (what pgjet's chunking assumes)", name, got, want)
		}
		return o
	}

	hub := load(t, "hub")
	if got, want := hub.LeafNode.Port, 7422; got != want {
		t.Errorf("hub.conf: leafnodes port = %d, want %d", got, want)
	}
	if !hub.LeafNode.NoAdvertise {
		t.Error("hub.conf: leafnodes must set no_advertise: true, or a cut region reconnects around its proxy")
	}
	if n := len(hub.LeafNode.Remotes); n != 0 {
		t.Errorf("hub.conf: %d leafnode remotes, want none", n)
	}
	regions := map[string]*server.Options{}
	for _, r := range []string{"r1", "r2"} {
		o := load(t, r)
		if o.LeafNode.Port != 0 {
			t.Errorf("%s.conf: listens for leafnodes on %d; only the hub should", r, o.LeafNode.Port)
		}
		if got, want := len(o.LeafNode.Remotes), 1; got != want {
			t.Fatalf("%s.conf: %d leafnode remotes, want %d", r, got, want)
		}
		urls := o.LeafNode.Remotes[0].URLs
		if len(urls) != 1 || urls[0].Scheme != "nats-leaf" || urls[0].Host != "hub.example:7422" {
			t.Errorf("%s.conf: leafnode remote URLs = %v, want [nats-leaf://hub.example:7422]", r, urls)
		}
		if got, want := o.LeafNode.ReconnectInterval, time.Second; got != want {
			t.Errorf("%s.conf: leafnodes reconnect = %s, want %s", r, got, want)
		}
		regions[r] = o
	}
	if t.Failed() {
		return
	}

	// Run them: the configs must also work together, not only parse.
	leafPort, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	run := func(name string, o *server.Options) *server.Server {
		t.Helper()
		o.Host, o.Port, o.HTTPPort = "127.0.0.1", server.RANDOM_PORT, 0
		o.StoreDir, o.NoSigs = t.TempDir(), true
		if o.LeafNode.Port != 0 {
			o.LeafNode.Host, o.LeafNode.Port = "127.0.0.1", leafPort
		}
		for _, rm := range o.LeafNode.Remotes {
			rm.URLs = []*url.URL{{Scheme: "nats-leaf", Host: fmt.Sprintf("127.0.0.1:%d", leafPort)}}
		}
		s, err := server.NewServer(o)
		if err != nil {
			t.Fatalf("configure %s from %s.conf: %v", name, name, err)
		}
		s.Start()
		t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
		if !s.ReadyForConnections(natsReadyTimeout) {
			t.Fatalf("%s from %s.conf not ready", name, name)
		}
		return s
	}
	hubSrv := run("hub", hub)
	for r, o := range regions {
		run(r, o)
	}
	eventually(t, natsReadyTimeout, "both regions joined the hub", func() (bool, error) {
		return hubSrv.NumLeafNodes() == 2, nil
	})

	nc, err := nats.Connect(hubSrv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for _, domain := range []string{"hub", "r1", "r2"} {
		t.Run("domain "+domain, func(t *testing.T) {
			js, err := jetstream.NewWithDomain(nc, domain)
			if err != nil {
				t.Fatal(err)
			}
			var info *jetstream.AccountInfo
			eventually(t, 10*time.Second, "JetStream of domain "+domain+" answers through the hub", func() (bool, error) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				info, err = js.AccountInfo(ctx)
				return err == nil, err
			})
			if got := info.Domain; got != domain {
				t.Errorf("account info domain = %q, want %q", got, domain)
			}
		})
	}
}
