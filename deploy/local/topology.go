package local

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/rs/zerolog"
)

// TopologyOptions describes a hub and its regions.
type TopologyOptions struct {
	// Hub names the hub server and its JetStream domain; default "hub".
	Hub string
	// Regions names one leafnode server per region, each its own JetStream
	// domain; at least one is required.
	Regions []string
	// BaseDir holds one JetStream store directory per server, named after it;
	// "" creates a temporary directory that Shutdown removes.
	BaseDir string
	// Proxied routes each region's leafnode connection to the hub through a
	// TCP Proxy of its own (Topology.Proxies), so that a test can cut one
	// region off and heal it. The hub does not advertise its leafnode URLs,
	// so a cut region cannot reconnect around its proxy.
	Proxied bool
	// Processes runs every server as a child nats-server process
	// (NATSOptions.Process), so that a test can kill one with SIGKILL.
	Processes bool
}

// Topology is a hub nats-server with one leafnode server per region, all
// embedded in this process. Streams are created in the hub's domain and
// mirrored into each region's domain.
type Topology struct {
	// Hub accepts the regions' leafnode connections.
	Hub *NATS
	// Regions maps a region name to its server.
	Regions map[string]*NATS
	// Names lists the region names in the order given.
	Names []string
	// Proxies maps a region name to the proxy its leafnode connection runs
	// through; empty unless TopologyOptions.Proxied.
	Proxies map[string]*Proxy

	baseDir string // removed on Shutdown when ownBase
	ownBase bool
	once    sync.Once
}

// StartTopology starts the hub, then each region as a leafnode of it, and
// returns once every region's leafnode connection is up. On error nothing is
// left running.
func StartTopology(opts TopologyOptions, log zerolog.Logger) (*Topology, error) {
	if opts.Hub == "" {
		opts.Hub = "hub"
	}
	if len(opts.Regions) == 0 {
		return nil, errors.New("start topology: no regions given")
	}
	seen := map[string]bool{opts.Hub: true}
	for _, r := range opts.Regions {
		if r == "" || seen[r] {
			return nil, fmt.Errorf("start topology: region name %q is empty or used twice; every server needs its own JetStream domain", r)
		}
		seen[r] = true
	}
	t := &Topology{
		Regions: make(map[string]*NATS, len(opts.Regions)),
		Proxies: map[string]*Proxy{},
		baseDir: opts.BaseDir,
	}
	if t.baseDir == "" {
		d, err := os.MkdirTemp("", "pgjet-topology-*")
		if err != nil {
			return nil, fmt.Errorf("start topology: create base directory: %w", err)
		}
		t.baseDir, t.ownBase = d, true
	}
	ok := false
	defer func() {
		if !ok {
			t.Shutdown()
		}
	}()
	hub, err := StartNATS(NATSOptions{
		Name:           opts.Hub,
		Domain:         opts.Hub,
		StoreDir:       filepath.Join(t.baseDir, safeName(opts.Hub)),
		LeafListenPort: -1,
		Process:        opts.Processes,
	}, log)
	if err != nil {
		return nil, fmt.Errorf("start topology hub %s: %w", opts.Hub, err)
	}
	t.Hub = hub
	for _, r := range opts.Regions {
		remote := hub.LeafURL()
		if opts.Proxied {
			px, err := StartProxy(0, fmt.Sprintf("127.0.0.1:%d", hub.Options().LeafListenPort))
			if err != nil {
				return nil, fmt.Errorf("start topology region %s: %w", r, err)
			}
			t.Proxies[r] = px
			remote = "nats-leaf://" + px.Addr()
		}
		n, err := StartNATS(NATSOptions{
			Name:        r,
			Domain:      r,
			StoreDir:    filepath.Join(t.baseDir, safeName(r)),
			LeafRemotes: []string{remote},
			Process:     opts.Processes,
		}, log)
		if err != nil {
			return nil, fmt.Errorf("start topology region %s: %w", r, err)
		}
		t.Regions[r] = n
		t.Names = append(t.Names, r)
	}
	ok = true
	return t, nil
}

// Server returns the hub or the region server called name, or nil.
func (t *Topology) Server(name string) *NATS {
	if t.Hub != nil && t.Hub.opts.Name == name {
		return t.Hub
	}
	return t.Regions[name]
}

// Shutdown stops the regions, then the hub, and removes the base directory
// if StartTopology created it. It is idempotent.
func (t *Topology) Shutdown() {
	t.once.Do(func() {
		// Regions first, so that they do not spend the shutdown redialling
		// the hub.
		for i := len(t.Names) - 1; i >= 0; i-- {
			t.Regions[t.Names[i]].Shutdown()
		}
		for _, px := range t.Proxies {
			px.Close()
		}
		if t.Hub != nil {
			t.Hub.Shutdown()
		}
		if t.ownBase {
			os.RemoveAll(t.baseDir)
		}
	})
}
