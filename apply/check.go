package apply

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgjet/pgjet/schema/pgerr"
	"github.com/pgjet/pgjet/stream"
)

// checkTimeout bounds the Postgres part of a check.
const checkTimeout = 10 * time.Second

// Check runs pgjet-apply --check-config: with cfg already validated, it
// checks, without changing anything, what the applier needs of the target
// (reachable with these credentials, the right to create or write the
// pgjet schema, the source's roles) and of NATS (reachable, credentials,
// JetStream in the domain, the stream or, with --upstream-domain, the
// local mirror or the upstream stream it mirrors, and the dead-letter
// stream when that policy is on).
func Check(ctx context.Context, cfg Config) []stream.CheckResult {
	res := checkTarget(ctx, cfg)
	nc, js, nres := stream.CheckNATS(cfg.NATS, "pgjet-apply check "+cfg.Name+" "+cfg.Region, cfg.NATSOptions, cfg.Domain)
	res = append(res, nres...)
	if nc == nil {
		return res
	}
	defer nc.Close()
	name := stream.StreamName(cfg.Name)
	res = append(res, stream.CheckStream(ctx, js, name, func() stream.CheckResult {
		if cfg.UpstreamDomain == "" {
			return stream.Fail("stream "+name, "absent in this domain; start pgjet-capture --name %s first, or give --upstream-domain when the stream lives in another domain", cfg.Name)
		}
		// The mirror is created on start: what matters is that the
		// stream it mirrors is there.
		up, err := stream.NewJetStream(nc, cfg.UpstreamDomain)
		if err != nil {
			return stream.Fail("stream "+name, "%v", err)
		}
		cctx, cancel := context.WithTimeout(ctx, checkTimeout)
		defer cancel()
		if _, err := up.Stream(cctx, name); err != nil {
			return stream.Fail("stream "+name, "no local mirror, and the stream to mirror cannot be read in domain %s (%v); check --upstream-domain, the leafnode link to it, and that pgjet-capture --name %s has started", cfg.UpstreamDomain, err, cfg.Name)
		}
		return stream.Pass("stream "+name, "no local mirror yet; pgjet-apply creates it from domain %s on start", cfg.UpstreamDomain)
	})...)
	if cfg.UpstreamDomain != "" {
		res = checkMirror(ctx, js, res, name, cfg.UpstreamDomain)
	}
	res = append(res, checkNotSource(ctx, cfg, js))
	if r, ok := checkRoles(ctx, cfg, nc, js); ok {
		res = append(res, r)
	}
	if cfg.OnBadMessage == OnBadMessageDeadLetter {
		dlq := DeadLetterStream(cfg.Name, cfg.Region)
		for _, r := range stream.CheckStream(ctx, js, dlq, func() stream.CheckResult {
			return stream.CanCreateStream(ctx, js, dlq, "pgjet-apply")
		}) {
			if r.Name != "nats jetstream" { // already reported
				res = append(res, r)
			}
		}
	}
	return res
}

// checkMirror turns the pass of a stream found present into a failure
// when, with --upstream-domain, it is not the mirror pgjet-apply would
// make: the stream itself (one domain) or a mirror of something else.
func checkMirror(ctx context.Context, js jetstream.JetStream, res []stream.CheckResult, name, upstreamDomain string) []stream.CheckResult {
	for i, r := range res {
		if r.Name != "stream "+name || !r.OK || !strings.HasPrefix(r.Detail, "present") {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, checkTimeout)
		st, err := js.Stream(cctx, name)
		cancel()
		if err != nil {
			continue // it was there a moment ago: the start will tell
		}
		if err := stream.MirrorConflict(st.CachedInfo().Config, upstreamDomain); err != nil {
			res[i] = stream.Fail(r.Name, "%v", err)
		}
	}
	return res
}

// checkRoles compares the roles of the source, as its newest complete
// snapshot lists them, with the target's: every role the snapshot's schema
// names must exist (and the apply role must be able to become its
// owners) for a restore; any other role of the source the target lacks
// stops pgjet-apply at its first schema change. It reports nothing (false)
// when the target cannot be reached, which checkTarget reported.
func checkRoles(ctx context.Context, cfg Config, nc *nats.Conn, js jetstream.JetStream) (stream.CheckResult, bool) {
	const name = "roles"
	if cfg.NoOwners {
		return stream.Pass(name, "not compared: with --no-owners the schema is restored and changed as the apply role"), true
	}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	conn, _, err := pgerr.CheckConnect(ctx, cfg.DB)
	if err != nil {
		return stream.CheckResult{}, false
	}
	defer conn.Close(context.WithoutCancel(ctx))
	snapName := stream.SnapshotStreamName(cfg.Name)
	st, err := js.Stream(ctx, snapName)
	if errors.Is(err, jetstream.ErrStreamNotFound) && cfg.UpstreamDomain != "" {
		// No local mirror yet: the upstream stream it would mirror.
		if up, uerr := stream.NewJetStream(nc, cfg.UpstreamDomain); uerr == nil {
			st, err = up.Stream(ctx, snapName)
		}
	}
	var snaps []stream.SnapshotInfo
	if err == nil {
		snaps, err = stream.ListSnapshots(ctx, st, cfg.Name)
	}
	i := newestComplete(snaps, func(stream.SnapshotInfo) bool { return true })
	switch {
	case err != nil && stream.JetStreamMissing(js, err):
		return stream.CheckResult{}, false // reported by the JetStream check
	case err != nil && !errors.Is(err, jetstream.ErrStreamNotFound):
		return stream.Warn(name, "cannot read the snapshots of source %s to compare the target's roles with the source's (%v)", cfg.Name, err), true
	case i < 0:
		return stream.Pass(name, "no complete snapshot of source %s to compare the target's roles with yet; a schema change made by a role the target lacks stops pgjet-apply (pgjet roles copies the source's roles)", cfg.Name), true
	case !snaps[i].Manifest.Privileges:
		return stream.Pass(name, "the newest snapshot (%s) is of an older pgjet and lists no roles", snaps[i].ID), true
	}
	man := snaps[i].Manifest
	rc, err := CheckRoles(ctx, conn, man)
	if err != nil {
		return stream.Fail(name, "%v", err), true
	}
	if p := rc.Problem(); p != "" {
		return stream.Fail(name, "as of snapshot %s: %s", man.ID, p), true
	}
	if len(rc.SourceMissing) > 0 {
		return stream.Warn(name, "the source has roles the target lacks: %s (as of snapshot %s); a schema change one of them makes stops pgjet-apply: copy them with pgjet roles --source SOURCE_URL --target TARGET_URL",
			quoteNames(rc.SourceMissing), man.ID), true
	}
	return stream.Pass(name, "the target has every role of the source (as of snapshot %s), and the apply role %s may become the %d that own objects",
		man.ID, rc.ApplyRole, len(man.Owners)), true
}

// checkTarget checks the target database: reachable, and the pgjet
// schema present and writable or creatable.
func checkTarget(ctx context.Context, cfg Config) []stream.CheckResult {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	conn, ok, err := pgerr.CheckConnect(ctx, cfg.DB)
	res := []stream.CheckResult{stream.Result("postgres connection", err, ok)}
	if err != nil {
		return res
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return append(res, checkPgjetSchema(ctx, conn, cfg.DB))
}

// checkPgjetSchema checks the applier can keep its position: it creates
// schema pgjet (CREATE on the database) or, when it exists, writes
// pgjet.applied and pgjet.conflicts, at a schema version this pgjet knows.
func checkPgjetSchema(ctx context.Context, conn *pgx.Conn, db string) stream.CheckResult {
	const name = "pgjet schema"
	var role string
	var exists, canCreate, applied, conflicts bool
	err := conn.QueryRow(ctx, `SELECT current_user, to_regnamespace('pgjet') IS NOT NULL,
		has_database_privilege(current_database(), 'CREATE'),
		coalesce(has_table_privilege(to_regclass('pgjet.applied'), 'SELECT, INSERT, UPDATE'), false),
		coalesce(has_table_privilege(to_regclass('pgjet.conflicts'), 'INSERT'), false)`).Scan(&role, &exists, &canCreate, &applied, &conflicts)
	switch {
	case err != nil:
		return stream.Fail(name, "read privileges: %v", err)
	case !exists && !canCreate:
		return stream.Fail(name, "schema pgjet is missing and role %s may not create it; GRANT CREATE ON DATABASE to it, or create the schema as deploy/postgres/roles.sql does", role)
	case !exists:
		return stream.Pass(name, "missing; pgjet-apply creates it on start (role %s has CREATE on the database)", role)
	case !applied || !conflicts:
		var ownsSchema bool
		if err := conn.QueryRow(ctx, "SELECT pg_has_role(nspowner, 'USAGE') FROM pg_namespace WHERE nspname = 'pgjet'").Scan(&ownsSchema); err != nil {
			return stream.Fail(name, "read schema pgjet: %v", err)
		}
		if !ownsSchema {
			return stream.Fail(name, "role %s may not write pgjet.applied and pgjet.conflicts (or they are missing and it does not own schema pgjet); run deploy/postgres/roles.sql -v side=target", role)
		}
	}
	if have, err := schemaVersion(ctx, conn); err != nil {
		return stream.Fail(name, "%v", err)
	} else if have > SchemaVersion() {
		return stream.Fail(name, "%v", newerSchema(db, have))
	}
	return stream.Pass(name, "present and writable by role %s", role)
}

// checkNotSource checks that the target is not the stream's source itself
// (see notSource).
func checkNotSource(ctx context.Context, cfg Config, js jetstream.JetStream) stream.CheckResult {
	const name = "target is not the source"
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	st, err := js.Stream(ctx, stream.StreamName(cfg.Name))
	if err != nil {
		return stream.Pass(name, "nothing to compare yet: stream %s is not readable here", stream.StreamName(cfg.Name))
	}
	conn, _, err := pgerr.CheckConnect(ctx, cfg.DB)
	if err != nil {
		return stream.Pass(name, "not checked: the target is unreachable (above)")
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := notSource(ctx, conn, st, cfg.Name); err != nil {
		return stream.Fail(name, "%v", err)
	}
	return stream.Pass(name, "the target holds no slot of source %s", cfg.Name)
}
