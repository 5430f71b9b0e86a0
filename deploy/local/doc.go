// Package local stands up throwaway pgjet infrastructure on one machine:
// PostgreSQL 15 clusters run as child processes and nats-servers embedded in
// this process, wired as a hub plus one leafnode server per region.
//
// Integration tests use it through [NewTestPostgres] and [NewTestTopology],
// which fail (never skip) with an installation hint when a tool is missing;
// the `pgjet demo` command uses [StartPostgres] and [StartTopology] directly.
//
// Postgres clusters are configured for logical replication
// (https://www.postgresql.org/docs/15/logical-replication-config.html) with
// durability switched off unless asked for, because these clusters live for
// one test. When the process runs as root, initdb and postgres run as the
// `postgres` OS user, since Postgres refuses to run as root
// (https://www.postgresql.org/docs/15/app-postgres.html).
//
// Each region is a leafnode of the hub with its own JetStream domain
// (https://docs.nats.io/running-a-nats-service/configuration/leafnodes/jetstream_leafnodes),
// so a region mirrors a hub stream with
// StreamConfig{Mirror: &StreamSource{Name: ..., Domain: "hub"}}. With
// TopologyOptions.Proxied each region's leafnode link runs through a TCP
// [Proxy], which partition tests Cut and Heal; the hub sets no_advertise so
// a cut region cannot reconnect around it.
package local
