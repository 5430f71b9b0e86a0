package local

import (
	"fmt"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"
)

// DefaultMaxPayload is the largest NATS message accepted by default, more
// than nats-server's own 1 MB: larger rows take fewer messages (rows larger
// than a message travel in pieces). Tests of large values use the server's
// default (server.MAX_PAYLOAD_SIZE).
const DefaultMaxPayload = 8 << 20

// JetStream limits of a local server: high enough never to be the reason a
// test fails, low enough not to claim a laptop's disk.
const (
	jsMaxMemory = 1 << 30
	jsMaxStore  = 20 << 30
)

// natsReadyTimeout bounds the wait for a server to accept clients and for a
// leafnode remote to connect to its hub (the remote dials at once; retries
// come every second).
const natsReadyTimeout = 15 * time.Second

// NATSOptions configures an embedded nats-server with JetStream.
type NATSOptions struct {
	// Name is the server name, also used in log events. Default "nats".
	Name string
	// Domain is the JetStream domain. Each server of a topology needs its own,
	// otherwise the JetStream APIs of hub and leafnode collide.
	Domain string
	// Port is the client port on 127.0.0.1; 0 picks a free one, which is then
	// kept across Restart.
	Port int
	// StoreDir holds JetStream data; "" creates a temporary directory, which
	// Close removes. Reusing a directory restarts with the same streams.
	StoreDir string
	// LeafListenPort > 0 makes this server a hub accepting leafnode
	// connections on that port; -1 picks a free port. 0 means no leafnode
	// listener.
	LeafListenPort int
	// LeafRemotes are nats-leaf://127.0.0.1:PORT URLs of one hub (several URLs
	// only for a hub cluster) that this server joins as a leafnode.
	LeafRemotes []string
	// MaxPayload is the maximum message size; default DefaultMaxPayload.
	MaxPayload int32
	// TLS, when set, makes the client port require TLS with these files
	// (see GenerateTLS); ClientURL then starts with tls://.
	TLS *TLSFiles
	// VerifyClients, with TLS, requires a client certificate signed by
	// TLS.CA (nats-server's tls { verify: true }).
	VerifyClients bool
	// User and Password, when set, are the only client credentials the
	// server accepts. Token is the alternative: the only token accepted.
	User, Password, Token string
	// NoJetStream runs the server without JetStream, as a misconfigured
	// one would be: for tests of what pgjet says about it.
	NoJetStream bool
	// SyncInterval > 0 makes JetStream fsync in the background at that
	// interval, acknowledging writes before they are on disk (nats-server's
	// default, 2 minutes). 0 syncs every write before its ack
	// (jetstream { sync_interval: always }), which pgjet's "acknowledged
	// means durable" needs.
	SyncInterval time.Duration
	// SystemUser and SystemPassword, when set, add a user of the system
	// account (with User, which then must be set too): --check-config reads
	// the server's JetStream settings through it.
	SystemUser, SystemPassword string
	// Process runs the server as a child process of the nats-server
	// binary on $PATH (see StartNATSProcess) instead of in this process,
	// so that Kill can end it with SIGKILL. It supports no TLS,
	// credentials or NoJetStream, and Server returns nil.
	Process bool
}

// NATS is an embedded nats-server with JetStream running in this process.
// Its methods are safe for concurrent use.
type NATS struct {
	opts     NATSOptions
	ownStore bool
	log      zerolog.Logger

	mu  sync.Mutex
	srv *server.Server
	// child is the process of a Process server; running says whether it
	// runs; monitor is its monitoring port.
	child   *NATSProcess
	running bool
	monitor int
}

// StartNATS starts a server and returns once it accepts clients and, when it
// has LeafRemotes, once its leafnode connection to the hub is up. The server
// runs until Shutdown or Close.
func StartNATS(opts NATSOptions, log zerolog.Logger) (*NATS, error) {
	if err := serversAllowed("nats-server"); err != nil {
		return nil, err
	}
	if opts.Name == "" {
		opts.Name = "nats"
	}
	if opts.MaxPayload == 0 {
		opts.MaxPayload = DefaultMaxPayload
	}
	var err error
	// Ports are fixed now, not left to the server, so that Restart comes back
	// on the same ones and clients and leafnodes reconnect.
	if opts.Port == 0 {
		if opts.Port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	if opts.LeafListenPort < 0 {
		if opts.LeafListenPort, err = FreePort(); err != nil {
			return nil, err
		}
	}
	n := &NATS{
		log: log.With().Str(fieldComponent, "local").Str(fieldServer, opts.Name).Str(fieldDomain, opts.Domain).Logger(),
	}
	if opts.StoreDir == "" {
		d, err := os.MkdirTemp("", "pgjet-nats-"+safeName(opts.Name)+"-*")
		if err != nil {
			return nil, fmt.Errorf("create JetStream store directory: %w", err)
		}
		opts.StoreDir, n.ownStore = d, true
	}
	n.opts = opts
	if err := n.start(); err != nil {
		if n.ownStore {
			os.RemoveAll(opts.StoreDir)
		}
		return nil, err
	}
	n.log.Info().Str("url", n.ClientURL()).Msg("nats-server started")
	return n, nil
}

// serverOptions translates NATSOptions into nats-server options.
func (n *NATS) serverOptions() (*server.Options, error) {
	o := n.opts
	so := &server.Options{
		ServerName:         o.Name,
		Host:               "127.0.0.1",
		Port:               o.Port,
		MaxPayload:         o.MaxPayload,
		JetStream:          !o.NoJetStream,
		JetStreamDomain:    o.Domain,
		JetStreamMaxMemory: jsMaxMemory,
		JetStreamMaxStore:  jsMaxStore,
		StoreDir:           o.StoreDir,
		// An acknowledged message must survive a host crash.
		SyncAlways:   o.SyncInterval <= 0,
		SyncInterval: o.SyncInterval,
		// Signals belong to the program embedding the server.
		NoSigs: true,
	}
	if o.TLS != nil {
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{
			CertFile: o.TLS.ServerCert, KeyFile: o.TLS.ServerKey, CaFile: o.TLS.CA, Verify: o.VerifyClients,
		})
		if err != nil {
			return nil, fmt.Errorf("nats-server %s TLS: %w", o.Name, err)
		}
		so.TLS, so.TLSVerify, so.TLSConfig, so.TLSTimeout = true, o.VerifyClients, tc, 2
	}
	if o.User != "" {
		so.Users = []*server.User{{Username: o.User, Password: o.Password}}
	}
	so.Authorization = o.Token
	if o.SystemUser != "" {
		sys := server.NewAccount("SYS")
		so.Accounts, so.SystemAccount = []*server.Account{sys}, "SYS"
		so.Users = append(so.Users, &server.User{Username: o.SystemUser, Password: o.SystemPassword, Account: sys})
	}
	if o.LeafListenPort > 0 {
		so.LeafNode.Host = "127.0.0.1"
		so.LeafNode.Port = o.LeafListenPort
		// Without this a remote learns the hub's URLs from INFO and reconnects
		// around a TCP proxy that a partition test has cut.
		so.LeafNode.NoAdvertise = true
	}
	if len(o.LeafRemotes) > 0 {
		remote := &server.RemoteLeafOpts{}
		for _, s := range o.LeafRemotes {
			u, err := url.Parse(s)
			if err != nil {
				return nil, fmt.Errorf("parse leafnode remote %q: %w", s, err)
			}
			remote.URLs = append(remote.URLs, u)
		}
		so.LeafNode.Remotes = []*server.RemoteLeafOpts{remote}
	}
	return so, nil
}

// start creates and starts the server. n.mu must be held or n not yet shared.
func (n *NATS) start() error {
	if n.opts.Process {
		if err := n.startChild(); err != nil {
			return err
		}
		n.running = true
		return nil
	}
	so, err := n.serverOptions()
	if err != nil {
		return err
	}
	srv, err := server.NewServer(so)
	if err != nil {
		return fmt.Errorf("configure nats-server %s: %w", n.opts.Name, err)
	}
	srv.SetLoggerV2(natsLogger{n.log}, n.log.GetLevel() <= zerolog.DebugLevel, n.log.GetLevel() <= zerolog.TraceLevel, false)
	srv.Start()
	if !srv.ReadyForConnections(natsReadyTimeout) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return fmt.Errorf("nats-server %s not ready for connections on port %d within %s (port taken?)",
			n.opts.Name, n.opts.Port, natsReadyTimeout)
	}
	if len(n.opts.LeafRemotes) > 0 {
		deadline := time.Now().Add(natsReadyTimeout)
		for srv.NumLeafNodes() == 0 {
			if time.Now().After(deadline) {
				srv.Shutdown()
				srv.WaitForShutdown()
				return fmt.Errorf("nats-server %s: no leafnode connection to %v within %s; is the hub running?",
					n.opts.Name, n.opts.LeafRemotes, natsReadyTimeout)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	n.srv = srv
	return nil
}

// ClientURL returns the nats:// (tls:// with TLS) URL clients connect to.
// It carries no credentials.
func (n *NATS) ClientURL() string {
	scheme := "nats"
	if n.opts.TLS != nil {
		scheme = "tls"
	}
	return fmt.Sprintf("%s://127.0.0.1:%d", scheme, n.opts.Port)
}

// LeafURL returns the nats-leaf:// URL regions join as leafnodes, or "" when
// this server has no leafnode listener.
func (n *NATS) LeafURL() string {
	if n.opts.LeafListenPort <= 0 {
		return ""
	}
	return fmt.Sprintf("nats-leaf://127.0.0.1:%d", n.opts.LeafListenPort)
}

// Options returns the options the server runs with, with ports and StoreDir
// resolved; StartNATS with them starts an equivalent server.
func (n *NATS) Options() NATSOptions { return n.opts }

// Server returns the running nats-server, or nil after Shutdown. Tests use
// it for introspection such as NumLeafNodes; do not shut it down directly.
func (n *NATS) Server() *server.Server {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv
}

// Shutdown stops the server and waits for it, keeping StoreDir so that
// Restart comes back with the same streams. It is idempotent.
func (n *NATS) Shutdown() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.shutdown()
}

func (n *NATS) shutdown() {
	if n.opts.Process {
		if n.running {
			n.child.Stop()
			n.running = false
			n.log.Info().Msg("nats-server stopped")
		}
		return
	}
	if n.srv == nil {
		return
	}
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
	n.srv = nil
	n.log.Info().Msg("nats-server stopped")
}

// Restart starts the server again with the same options, port and
// StoreDir, shutting it down first if it is running. Like StartNATS it waits
// for the leafnode connection, so a region restarts only while its hub runs.
func (n *NATS) Restart() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.shutdown()
	if err := n.start(); err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	n.log.Info().Msg("nats-server restarted")
	return nil
}

// Close shuts the server down and removes StoreDir if StartNATS created it.
// It is idempotent.
func (n *NATS) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.shutdown()
	if n.child != nil {
		os.Remove(n.child.Conf)
		os.Remove(n.child.log)
	}
	if n.ownStore {
		n.ownStore = false
		if err := os.RemoveAll(n.opts.StoreDir); err != nil {
			return fmt.Errorf("remove JetStream store: %w", err)
		}
	}
	return nil
}

// natsLogger routes nats-server logs to zerolog at debug level: the server
// reports routine reconnects as errors, which would drown a test's output.
type natsLogger struct{ log zerolog.Logger }

var _ server.Logger = natsLogger{}

func (l natsLogger) Noticef(format string, v ...any) {
	l.log.Debug().Str("nats_level", "notice").Msgf(format, v...)
}

func (l natsLogger) Warnf(format string, v ...any) {
	l.log.Debug().Str("nats_level", "warn").Msgf(format, v...)
}

func (l natsLogger) Fatalf(format string, v ...any) {
	l.log.Error().Str("nats_level", "fatal").Msgf(format, v...)
}

func (l natsLogger) Errorf(format string, v ...any) {
	l.log.Debug().Str("nats_level", "error").Msgf(format, v...)
}

func (l natsLogger) Debugf(format string, v ...any) {
	l.log.Debug().Str("nats_level", "debug").Msgf(format, v...)
}

func (l natsLogger) Tracef(format string, v ...any) {
	l.log.Trace().Str("nats_level", "trace").Msgf(format, v...)
}
