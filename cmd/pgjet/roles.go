package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/pflag"

	"github.com/pgjet/pgjet/cmd/internal/cli"
	"github.com/pgjet/pgjet/schema"
	"github.com/pgjet/pgjet/schema/pgerr"
)

// rolesLock is the advisory lock a run holds on the target: runs on a
// schedule that overlap take turns instead of colliding on CREATE ROLE.
const rolesLock = 0x70676a6574726f6c // "pgjetrol"

func runRoles(args []string) int {
	var source, target string
	var o schema.RolesOptions
	var dryRun bool
	fs := pflag.NewFlagSet("pgjet roles", pflag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "pgjet roles copies the source cluster's roles to a target cluster: logical\n"+
			"replication does not carry roles, and a replica keeps the source's owners, grants and\n"+
			"policies, which name them. Roles missing on the target are created and those that\n"+
			"differ altered (LOGIN, INHERIT, CREATEDB, CREATEROLE, REPLICATION, BYPASSRLS,\n"+
			"CONNECTION LIMIT, VALID UNTIL), and memberships among the copied roles (and in\n"+
			"Postgres' pg_* roles) are granted or revoked to match the source's. Run again, it\n"+
			"changes nothing: it is safe to run on a schedule. All changes commit in one\n"+
			"transaction.\n\n"+
			"Left alone: the source's superusers and Postgres' own roles (never copied), roles\n"+
			"only the target has and memberships in them, the target's superusers, the role\n"+
			"connected to the target, roles matching --exclude. Nothing is ever dropped.\n"+
			"Passwords are not copied unless --with-passwords is given. Role settings\n"+
			"(ALTER ROLE ... SET) and comments are not copied.\n\n"+
			"The target role must be a superuser (or have CREATEROLE, which cannot grant\n"+
			"REPLICATION or BYPASSRLS).\n\n"+
			"Usage:\n  pgjet roles --source URL --target URL [--with-passwords] [--exclude PATTERN,...] [--dry-run]\n\n"+
			"Flags (each also read from the environment variable in brackets):\n%s", fs.FlagUsages())
	}
	fs.StringVar(&source, "source", "", "source database URL, e.g. postgres://user:secret@primary:5432/app (any database of its cluster)")
	fs.StringVar(&target, "target", "", "target database URL (any database of the replica's cluster)")
	fs.BoolVar(&o.Passwords, "with-passwords", false, "copy passwords too: each role's stored verifier (the SCRAM or md5 hash in pg_authid, never the clear text) is set on the target, so the role logs in there with the same password, and a role without one gets none; needs a superuser on both sides; hashes are never printed")
	fs.StringSliceVar(&o.Exclude, "exclude", nil, "leave roles matching these patterns alone (* and ? as wildcards, repeatable or comma-separated), e.g. pgjet_*")
	fs.BoolVar(&dryRun, "dry-run", false, "print the statements and change nothing")
	cli.Parse(fs, args)
	if err := sourceTargetRequired(source, target); err != nil {
		return cli.BadUsage("pgjet roles", err)
	}
	ctx, stop := cli.SignalContext()
	defer stop()
	if err := copyRoles(ctx, os.Stdout, source, target, o, dryRun); err != nil {
		if ctx.Err() != nil {
			err = errors.New("interrupted; nothing was changed")
		}
		return fail("pgjet roles", err)
	}
	return 0
}

// copyRoles makes target's copy of source's roles match, printing each
// statement to w.
func copyRoles(ctx context.Context, w io.Writer, source, target string, o schema.RolesOptions, dryRun bool) error {
	connect := func(side, url string) (*pgx.Conn, error) {
		cfg, err := pgx.ParseConfig(url)
		if err != nil {
			return nil, fmt.Errorf("--%s: cannot parse the connection URL: use postgres://user:password@host:port/dbname", side)
		}
		// VALID UNTIL compares as text on both sides.
		cfg.RuntimeParams["DateStyle"], cfg.RuntimeParams["TimeZone"] = "ISO", "UTC"
		cfg.RuntimeParams["application_name"] = "pgjet roles"
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", side, pgerr.ClassifyConnect(url, err))
		}
		return conn, nil
	}
	src, err := connect("source", source)
	if err != nil {
		return err
	}
	defer src.Close(context.WithoutCancel(ctx))
	dst, err := connect("target", target)
	if err != nil {
		return err
	}
	defer dst.Close(context.WithoutCancel(ctx))

	from, err := schema.ReadRoles(ctx, src, o.Passwords)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	tx, err := dst.Begin(ctx)
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(rolesLock)); err != nil {
		return fmt.Errorf("target: %w", err)
	}
	to, err := schema.ReadRoles(ctx, dst, o.Passwords)
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	p := schema.PlanRoles(from, to, o)
	for _, s := range p.Skipped {
		fmt.Fprintf(w, "-- skipped %s\n", s)
	}
	for _, st := range p.Statements {
		fmt.Fprintf(w, "%s;\n", st.Show)
		if dryRun {
			continue
		}
		if _, err := tx.Exec(ctx, st.SQL); err != nil {
			if pgerr.PgCode(err) == pgerr.CodeInsufficientPriv {
				return pgerr.Fatalf(err, "the target role %q may not run %s; connect --target as a superuser (a role with CREATEROLE may not grant REPLICATION or BYPASSRLS), or --exclude that role; nothing was changed",
					to.Current, strings.SplitN(st.Show, " WITH", 2)[0])
			}
			return fmt.Errorf("target: %s: %w; nothing was changed", st.Show, err)
		}
	}
	if len(p.Statements) == 0 {
		fmt.Fprintln(w, "-- nothing to change: the target's roles match the source's")
		return nil
	}
	summary := fmt.Sprintf("roles created %d, altered %d; memberships granted %d, revoked %d", p.Created, p.Altered, p.Granted, p.Revoked)
	if dryRun {
		fmt.Fprintf(w, "-- dry run, nothing changed; a run would make: %s\n", summary)
		return nil
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("target: commit: %w", err)
	}
	fmt.Fprintf(w, "-- %s\n", summary)
	return nil
}
