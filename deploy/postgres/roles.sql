-- pgjet: least-privilege Postgres roles, for PostgreSQL 15.
--
-- Run with psql as a superuser, once in the source database and once in
-- each target database (re-running is harmless):
--
--   psql -v side=source -v name=app -f roles.sql postgres://postgres@primary:5432/app
--   psql -v side=target -f roles.sql postgres://postgres@replica:5432/app
--
-- Variables (psql -v):
--   side      source or target (required)
--   name      the source name given to pgjet-capture --name (source side;
--             names the publication pgjet_<name>; default app)
--   via_root  true to publish partitions as their root table, as
--             pgjet-capture --partitions root does (source side; default false)
--   owner     the role that owns (and creates) the replicated tables
--             (default: the database's owner). New tables it creates get
--             the same grants through ALTER DEFAULT PRIVILEGES.
--   ddl       on (default) or off: whether the target replays schema
--             changes (pgjet-capture --ddl, on by default). See the target
--             section for what it costs.
--   authors   target side, with ddl=on: the roles that make schema changes
--             on the source, comma-separated (default: the owner). The
--             target replays each change as the role that made it, so
--             pgjet_apply becomes a member of each. They must exist on the
--             target first: `pgjet roles --source ... --target ...` copies
--             the source's roles.
--
-- The roles get no password here. Set one afterwards, in psql:
--   \password pgjet_capture      \password pgjet_apply
-- and pass it to the daemons through PGJET_DB or PGPASSWORD.
--
-- pg_hba.conf: pgjet-capture opens a normal and a logical replication
-- connection (replication=database). Both match a line naming the
-- database, e.g.
--   host  app  pgjet_capture  10.0.0.0/8  scram-sha-256
-- Do not give pgjet_capture a line with the `replication` keyword: that
-- keyword is for physical replication, which pgjet does not use.

\set ON_ERROR_STOP on
-- Keep this script's grants local: pgjet's DDL capture, when installed,
-- would otherwise replicate them to every target.
SET pgjet.ddl_capture = off;
\if :{?side}
\else
  DO $$ BEGIN RAISE EXCEPTION 'roles.sql: set -v side=source or -v side=target'; END $$;
\endif
\if :{?name}
\else
  \set name app
\endif
\if :{?via_root}
\else
  \set via_root false
\endif
\if :{?ddl}
\else
  \set ddl on
\endif
\if :{?owner}
\else
  SELECT pg_get_userbyid(datdba) AS owner FROM pg_database WHERE datname = current_database() \gset
\endif
\if :{?authors}
\else
  \set authors :owner
\endif

SELECT :'side' = 'source' AS is_source, :'side' = 'target' AS is_target,
       :'ddl'::boolean AS replay_ddl \gset
\if :is_source
\elif :is_target
\else
  DO $$ BEGIN RAISE EXCEPTION 'roles.sql: side must be source or target'; END $$;
\endif

-- The schemas holding application tables: every schema but the system
-- ones and pgjet's own.
CREATE TEMP VIEW pgjet_app_schemas AS
  SELECT nspname FROM pg_namespace
  WHERE nspname NOT LIKE 'pg\_%' AND nspname NOT IN ('information_schema', 'pgjet');

\if :is_source
-- ===================================================================
-- Source: pgjet_capture
-- ===================================================================
--
-- REPLICATION lets the role create the logical slot pgjet_<name> (which
-- pgjet-capture does itself on its first start) and stream from it. It
-- is a strong attribute: a slot decodes every change of the database,
-- whatever table privileges say, so treat pgjet_capture's password like
-- a superuser's read access.
SELECT 'CREATE ROLE pgjet_capture LOGIN REPLICATION'
  WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgjet_capture') \gexec
ALTER ROLE pgjet_capture LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE;
SELECT format('GRANT CONNECT ON DATABASE %I TO pgjet_capture', current_database()) \gexec

-- The publication. CREATE PUBLICATION ... FOR ALL TABLES needs a
-- superuser, so it is created here; pgjet-capture finds it and uses it as
-- it is. (With --tables, pgjet-capture creates FOR TABLE publications
-- itself, which needs ownership of the tables instead.)
SELECT format('CREATE PUBLICATION %I FOR ALL TABLES WITH (publish_via_partition_root = %s)',
              'pgjet_' || :'name', (:'via_root')::boolean::text)
  WHERE NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'pgjet_' || :'name') \gexec

-- SELECT on the tables: pgjet-capture gets rows from the slot, not from
-- the tables, but the initial copy (pg_dump) and `pgjet verify --source`
-- read them, and may use this role.
-- SELECT on the sequences: pgjet-capture reads their values from
-- pg_sequences, which shows NULL, and so nothing to publish, for a
-- sequence the role may not read.
SELECT format('GRANT USAGE ON SCHEMA %I TO pgjet_capture', nspname) FROM pgjet_app_schemas \gexec
SELECT format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO pgjet_capture', nspname) FROM pgjet_app_schemas \gexec
SELECT format('GRANT SELECT ON ALL SEQUENCES IN SCHEMA %I TO pgjet_capture', nspname) FROM pgjet_app_schemas \gexec
SELECT format('ALTER DEFAULT PRIVILEGES FOR ROLE %I GRANT SELECT ON TABLES TO pgjet_capture', :'owner') \gexec
SELECT format('ALTER DEFAULT PRIVILEGES FOR ROLE %I GRANT SELECT ON SEQUENCES TO pgjet_capture', :'owner') \gexec
-- Tables in a schema created later need: GRANT USAGE ON SCHEMA s TO pgjet_capture.

-- pg_read_all_stats: pgjet-capture's /readyz (--metrics-addr) checks that
-- Postgres receives its standby status (pg_stat_replication.reply_time),
-- and Postgres shows a WAL sender's columns to members of
-- pg_read_all_stats only, not to the role that runs it. Without it,
-- /readyz stays 503 ("no standby status reached Postgres"). The role
-- also lets pgjet_capture read every pg_stat_* view (other sessions'
-- queries included); leave it out if you do not use /readyz.
GRANT pg_read_all_stats TO pgjet_capture;

-- The schema pgjet holds pgjet-capture's DDL capture function. At every
-- start pgjet-capture looks that function up (even with --ddl=false),
-- and fails with "permission denied for schema pgjet" when the schema
-- exists and the role may not use it; so it is created here, owned by
-- the superuser, and pgjet_capture may use it.
CREATE SCHEMA IF NOT EXISTS pgjet;
GRANT USAGE ON SCHEMA pgjet TO pgjet_capture;

-- Schema changes (DDL). pgjet-capture captures them with event triggers
-- (pgjet_ddl_start, _end, _drop) and the function pgjet.ddl_capture(),
-- and only a superuser may create event triggers. When pgjet-capture
-- runs as pgjet_capture and they are missing, it logs a warning
-- ("DDL capture is off: role ... is not a superuser ...") and goes on
-- capturing rows, without schema changes. To install them, run
-- pgjet-capture once with a superuser's URL (it installs them, and
-- creates the slot and the stream if they are missing), stop it with
-- Ctrl-C, then run it as pgjet_capture for good. Do this again after an
-- upgrade of pgjet that changes the triggers: pgjet-capture then warns
-- that they are "from another pgjet version". With --ddl=false, nothing
-- is needed.
\echo 'source ready: pgjet_capture, publication' 'pgjet_':name
\echo 'for schema changes, run pgjet-capture once as a superuser (see roles.sql)'
\endif

\if :is_target
-- ===================================================================
-- Target: pgjet_apply
-- ===================================================================
SELECT 'CREATE ROLE pgjet_apply LOGIN'
  WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgjet_apply') \gexec
ALTER ROLE pgjet_apply LOGIN NOSUPERUSER NOREPLICATION NOCREATEDB NOCREATEROLE;

-- The schema pgjet (pgjet.applied, pgjet.conflicts, pgjet.ddl_done)
-- belongs to pgjet_apply. pgjet-apply runs CREATE SCHEMA IF NOT EXISTS
-- pgjet at every start, and Postgres checks the CREATE privilege on the
-- database for it even when the schema exists, so that grant is needed
-- too. A target restored from a dump of the source may already hold a
-- schema pgjet (with the source's pgjet.ddl_capture()): it is handed over.
SELECT format('GRANT CONNECT, CREATE ON DATABASE %I TO pgjet_apply', current_database()) \gexec
CREATE SCHEMA IF NOT EXISTS pgjet AUTHORIZATION pgjet_apply;
ALTER SCHEMA pgjet OWNER TO pgjet_apply;

-- Rows. pgjet-apply reads (to find rows and record conflicts), inserts,
-- updates, deletes and truncates replicated tables, and moves sequences
-- forward with setval, which needs UPDATE on the sequence.
SELECT format('GRANT USAGE ON SCHEMA %I TO pgjet_apply', nspname) FROM pgjet_app_schemas \gexec
SELECT format('GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA %I TO pgjet_apply', nspname) FROM pgjet_app_schemas \gexec
SELECT format('GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA %I TO pgjet_apply', nspname) FROM pgjet_app_schemas \gexec
SELECT format('ALTER DEFAULT PRIVILEGES FOR ROLE %I GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON TABLES TO pgjet_apply', :'owner') \gexec
SELECT format('ALTER DEFAULT PRIVILEGES FOR ROLE %I GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO pgjet_apply', :'owner') \gexec

-- Schema changes. pgjet-apply replays each schema change as the role
-- that made it on the source (inside a temporary SECURITY DEFINER
-- function that role owns), so objects keep their owners and SECURITY
-- DEFINER functions their definers, and no change gets more rights on a
-- replica than its author had on the source. Making the function needs
-- TEMPORARY on the database, for pgjet_apply (granted below) and for the
-- authors (PUBLIC has it unless revoked). Owning it needs membership, not
-- superuser: with ddl=on, pgjet_apply becomes a member of
-- the owner and of each role in authors. It may then do whatever those
-- roles may do in this database, which for a read replica is
-- replication's job anyway; TRUNCATE ... RESTART IDENTITY (which resets
-- the owner's sequences) needs it too. A change made by a role pgjet_apply
-- may not become stops pgjet-apply (exit status 1) with the GRANT that
-- fixes it; one made by a role missing here names `pgjet roles`. Make
-- schema changes on the source as these roles, not as a superuser: none of
-- them may be a superuser (a member could SET ROLE to it), so a
-- superuser's change stops pgjet-apply, which then says how to make it
-- by hand and mark it done in pgjet.ddl_done.
-- With ddl=off pgjet_apply keeps the row grants above only (memberships
-- granted by an earlier run are revoked). pgjet-apply then stops at each
-- replicated schema change, naming it and saying how to make it by hand
-- and mark it done in pgjet.ddl_done, and at a TRUNCATE ... RESTART
-- IDENTITY with Postgres' "must be owner of sequence" error. Use it with
-- pgjet-capture --ddl=false, or when schema changes are rare.
CREATE TEMP TABLE pgjet_authors AS
  SELECT DISTINCT btrim(a) AS name
  FROM unnest(string_to_array(:'owner' || ',' || :'authors', ',')) a WHERE btrim(a) <> '';
SELECT coalesce(string_agg(quote_ident(name), ', '), '') AS missing_authors FROM pgjet_authors
  WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = name) \gset
\if :replay_ddl
SELECT :'missing_authors' <> '' AS authors_missing \gset
\if :authors_missing
  SELECT set_config('pgjet.roles_error', format('roles.sql: role(s) %s missing on this cluster; copy the source''s roles first (pgjet roles --source SOURCE_URL --target TARGET_URL) or fix -v owner / -v authors', :'missing_authors'), false) AS roles_error \gset
  DO $$ BEGIN RAISE EXCEPTION '%', current_setting('pgjet.roles_error'); END $$;
\endif
SELECT coalesce(string_agg(quote_ident(name), ', '), '') AS super_authors FROM pgjet_authors a JOIN pg_roles r ON r.rolname = a.name
  WHERE r.rolsuper \gset
SELECT :'super_authors' <> '' AS authors_super \gset
\if :authors_super
  SELECT set_config('pgjet.roles_error', format('roles.sql: %s: superuser; make the replicated tables owned, and the schema changes made, by roles that are not (-v owner=ROLE -v authors=ROLE,...), or use -v ddl=off', :'super_authors'), false) AS roles_error \gset
  DO $$ BEGIN RAISE EXCEPTION '%', current_setting('pgjet.roles_error'); END $$;
\endif
SELECT format('GRANT %I TO pgjet_apply', name) FROM pgjet_authors \gexec
SELECT format('GRANT TEMPORARY ON DATABASE %I TO pgjet_apply', current_database()) \gexec
\else
SELECT format('REVOKE %I FROM pgjet_apply', name) FROM pgjet_authors a JOIN pg_roles r ON r.rolname = a.name
  WHERE pg_has_role('pgjet_apply', r.oid, 'MEMBER') \gexec
\endif

-- session_replication_role = replica, pgjet-apply's default (--replica-role):
-- as in Postgres' own logical replication, the target's triggers (but
-- ENABLE REPLICA / ALWAYS ones) and foreign-key checks do not fire for
-- replicated rows, and pgjet-apply batches rows per table regardless of
-- the order between tables, which is faster. It is a superuser setting;
-- PostgreSQL 15 can grant it to one role, as here. The trade-off: within
-- its own sessions pgjet_apply can write rows that break foreign keys
-- (it writes what the source committed, which held them) and bypass
-- triggers. Without this grant, pgjet-apply warns ("cannot set
-- session_replication_role = replica") and goes on with triggers and
-- foreign keys firing: it then keeps the source's order across tables,
-- and triggers on the target (audit, denormalisation) run again for
-- every replicated row.
GRANT SET ON PARAMETER session_replication_role TO pgjet_apply;

-- Replication origins, superuser-only by default. pgjet-apply marks its
-- writes with the origin of its source, so that a capture of this
-- database can tell them from local writes and conflicts can be
-- detected. Without these grants it warns ("cannot use replication
-- origins") and goes on without.
GRANT EXECUTE ON FUNCTION
  pg_replication_origin_oid(text),
  pg_replication_origin_create(text),
  pg_replication_origin_session_setup(text),
  pg_replication_origin_xact_setup(pg_lsn, timestamptz),
  pg_replication_origin_xact_reset()
TO pgjet_apply;

\echo 'target ready: pgjet_apply'
\endif
