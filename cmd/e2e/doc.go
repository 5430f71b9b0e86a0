// Package e2e holds the end-to-end tests of pgjet: they build the real
// binaries, start them the way users do, against real Postgres 15 clusters
// and real nats-servers started through deploy/local.
package e2e
