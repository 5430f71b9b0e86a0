package local

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"
)

// childConf returns the nats-server config file text of n's options, for
// a server run as a child process (NATSOptions.Process), and the port of
// its monitoring endpoint.
func (n *NATS) childConf() (string, int, error) {
	o := n.opts
	if o.TLS != nil || o.User != "" || o.Token != "" || o.SystemUser != "" || o.NoJetStream {
		return "", 0, fmt.Errorf("nats-server %s: a child process server supports no TLS, credentials or NoJetStream", o.Name)
	}
	mon, err := FreePort()
	if err != nil {
		return "", 0, err
	}
	sync := "always"
	if o.SyncInterval > 0 {
		sync = fmt.Sprintf("%q", o.SyncInterval.String())
	}
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	var b strings.Builder
	fmt.Fprintf(&b, "server_name: %s\nlisten: 127.0.0.1:%d\nhttp: 127.0.0.1:%d\nmax_payload: %d\n", q(o.Name), o.Port, mon, o.MaxPayload)
	fmt.Fprintf(&b, "jetstream {\n  domain: %s\n  store_dir: %s\n  max_memory_store: %d\n  max_file_store: %d\n  sync_interval: %s\n}\n",
		q(o.Domain), q(o.StoreDir), jsMaxMemory, jsMaxStore, sync)
	if o.LeafListenPort > 0 || len(o.LeafRemotes) > 0 {
		b.WriteString("leafnodes {\n")
		if o.LeafListenPort > 0 {
			// As in serverOptions: no advertised URLs to route around a
			// cut proxy.
			fmt.Fprintf(&b, "  listen: 127.0.0.1:%d\n  no_advertise: true\n", o.LeafListenPort)
		}
		if len(o.LeafRemotes) > 0 {
			urls := make([]string, len(o.LeafRemotes))
			for i, u := range o.LeafRemotes {
				urls[i] = q(u)
			}
			fmt.Fprintf(&b, "  remotes: [ { urls: [%s] } ]\n", strings.Join(urls, ", "))
		}
		b.WriteString("}\n")
	}
	return b.String(), mon, nil
}

// startChild runs n as a child nats-server process and waits, as start
// does, for clients and for its leafnode connection.
func (n *NATS) startChild() error {
	if n.child != nil {
		if err := n.child.Start(); err != nil {
			return err
		}
		return n.waitChildLeaf()
	}
	conf, mon, err := n.childConf()
	if err != nil {
		return err
	}
	path := strings.TrimRight(n.opts.StoreDir, "/") + ".conf"
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return fmt.Errorf("nats-server %s: write config: %w", n.opts.Name, err)
	}
	p, err := StartNATSProcess(n.opts.Name, path, fmt.Sprintf("nats://127.0.0.1:%d", n.opts.Port))
	if err != nil {
		return err
	}
	n.child, n.monitor = p, mon
	return n.waitChildLeaf()
}

// waitChildLeaf waits until a child server with leafnode remotes reports
// a leafnode connection on its monitoring endpoint.
func (n *NATS) waitChildLeaf() error {
	if len(n.opts.LeafRemotes) == 0 {
		return nil
	}
	deadline := time.Now().Add(natsReadyTimeout)
	for {
		var v struct {
			Leafnodes int `json:"leafnodes"`
		}
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/varz", n.monitor))
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&v)
			resp.Body.Close()
		}
		if err == nil && v.Leafnodes > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			n.child.Kill()
			return fmt.Errorf("nats-server %s: no leafnode connection to %v within %s; is the hub running? log %s",
				n.opts.Name, n.opts.LeafRemotes, natsReadyTimeout, n.child.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill ends a server run as a child process (NATSOptions.Process) with
// SIGKILL, as a host crash would: what JetStream had not synced is lost,
// the rest is recovered from its store on Restart. An embedded server
// cannot be killed; Kill returns an error for it.
func (n *NATS) Kill() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.opts.Process {
		return fmt.Errorf("nats-server %s is embedded: only a child process server (NATSOptions.Process) can be killed", n.opts.Name)
	}
	if n.running {
		n.child.Kill()
		n.running = false
		n.log.Info().Msg("nats-server killed")
	}
	return nil
}
