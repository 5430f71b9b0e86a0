package schema

import "encoding/json"

// Tables without a key under a publication.
//
// Postgres refuses UPDATE and DELETE on a table that a publication
// publishes them for when the table has no replica identity: no primary
// key under REPLICA IDENTITY DEFAULT, an index identity whose index is
// gone, or NOTHING. pgjet-capture deals with the tables that exist when it
// starts (--keyless); DDLPublishFunction deals with those made later, in
// the transaction that makes them, so no row of theirs is missed and no
// UPDATE fails unannounced.
//
// It acts for every publication whose comment is pgjet's (KeylessComment):
//
//   - FOR ALL TABLES: a new table without a key gets REPLICA IDENTITY FULL
//     when the comment's keyless choice says so; otherwise its author gets
//     a WARNING naming the fixes, as does anyone who leaves a published
//     table without a key with ALTER TABLE.
//   - a list that stands for all tables (new_tables; capture makes one when
//     tables are left out or published inserts only): a new table joins
//     it, as it would join FOR ALL TABLES, unless it has no key: then the
//     keyless choice leaves it out, adds it to the inserts-only
//     publication, or sets REPLICA IDENTITY FULL. A table of the
//     inserts-only publication that gets a key moves to the list; one
//     left out joins it once it has a usable identity (ALTER TABLE ... ADD
//     PRIMARY KEY or REPLICA IDENTITY, as pg_dump's restore adds keys after
//     the rows, or an UNLOGGED table set LOGGED). Rows it holds then never
//     reached replicas: its author gets a WARNING naming the pgjet resync
//     that copies them, and a transactional message (stream.PrefixUnsynced)
//     makes capture log the same. A partition detached from its parent is
//     a table of its own, which joins the list as a new table would (its
//     rows were published with the parent's). A table left out (or
//     published inserts only) that ALTER TABLE ... ATTACH PARTITION makes
//     a partition of a published table is published through its parent
//     from then on: its rows get the same WARNING and message, and it
//     leaves the inserts-only publication. A CREATE TABLE AS that wrote
//     rows before the table could join refuses, since those rows would
//     never be replicated.
//
// Capture makes and remakes its publication under an exclusive advisory
// lock (PublicationLockKey), and the function takes it shared at the start
// and the end of every command it handles: a table made while capture
// reads the list of tables is either in that list or added by the function
// to the publication capture made.
//
// Partitions follow their root, but their identity is their own: a new
// partition without a key of a published root gets FULL, or the WARNING.
// The function is SECURITY DEFINER (a table's author may not change the
// publication) with a fixed search_path; as an event trigger function it
// cannot be called outside a schema change, and it heeds only publications
// owned by a superuser or a REPLICATION role (one that may read every
// change of the database through a slot anyway), whose comment no one else
// may write; their publication of inserts only must have the same owner.

// DDLPublishFunction is the event trigger function that adds tables made
// after capture started to pgjet's publications (see above).
const DDLPublishFunction = "pgjet.ddl_publish()"

// DDLFunctions are the functions DDL capture installs, each with its body.
var DDLFunctions = []struct{ Name, Body string }{{DDLFunction, DDLFunctionBody}, {DDLPublishFunction, DDLPublishFunctionBody}}

// PublicationLockKey is the SQL expression of the advisory lock that
// serialises capture's making of its publication with DDLPublishFunction.
const PublicationLockKey = "hashtextextended('pgjet.publication', 0)"

// KeylessComment is the comment capture puts on its publication: what
// DDLPublishFunction does with the tables made later. keyless is the
// choice for those without a key ("" for none: they are published and
// warned of); newTables says the publication lists tables but stands for
// all of them; inserts names the publication of inserts only; source is
// the source's name, for the commands the function names.
func KeylessComment(keyless string, newTables bool, inserts, source string) string {
	cfg := map[string]any{"source": source}
	if keyless != "" {
		cfg["keyless"] = keyless
	}
	if newTables {
		cfg["new_tables"] = true
		cfg["inserts"] = inserts
	}
	b, _ := json.Marshal(map[string]any{"pgjet": cfg})
	return string(b)
}

// KeylessSQL is a boolean SQL expression over the pg_class row c: whether
// Postgres refuses UPDATE and DELETE of the table once they are published.
const KeylessSQL = `CASE c.relreplident WHEN 'f' THEN false WHEN 'n' THEN true
	WHEN 'i' THEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)
	ELSE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) END`

// writtenHere is a boolean SQL expression: whether this transaction (or
// one of its subtransactions) wrote the catalog row alias. A row written
// by another transaction still in progress is not visible, and age() of a
// subtransaction's xid is negative.
func writtenHere(alias string) string {
	return "age(" + alias + ".xmin) <= 0 AND pg_xact_status((pg_current_xact_id()::text::bigint - age(" + alias + ".xmin))::text::xid8) = 'in progress'"
}

// unsynced is the PL/pgSQL that names the resync of table t.rel, whose
// rows replicas lack, to capture (a stream.PrefixUnsynced message naming
// publication p) and to the author of the command (a WARNING of format
// and arguments warning, with the command as its HINT).
func unsynced(warning string) string {
	return `PERFORM pg_logical_emit_message(true, 'pgjet.unsynced', jsonb_build_object('publication', p.pubname,
		'schema', (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = t.rel),
		'table', (SELECT c.relname FROM pg_class c WHERE c.oid = t.rel))::text);
	RAISE WARNING ` + warning + `
		USING HINT = format('Copy them to every region, once this transaction committed: pgjet resync --name %s --table %s',
			coalesce(p.cfg ->> 'source', regexp_replace(p.pubname, '^pgjet_', '')),
			(SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = t.rel));`
}

// DDLPublishFunctionBody is the PL/pgSQL body of DDLPublishFunction.
var DDLPublishFunctionBody = `
DECLARE
	t record;
	p record;
	keyless boolean;
	published boolean;
	created boolean;
	has_rows boolean;
	via boolean;
	via_ins boolean;
	in_ins boolean;
	choice text;
	ins text;
BEGIN
	-- Waits while capture makes its publication (PublicationLockKey).
	PERFORM pg_advisory_xact_lock_shared(` + PublicationLockKey + `);
	IF TG_EVENT = 'ddl_command_start' THEN
		IF TG_TAG = 'ALTER TABLE' THEN
			-- The tables this transaction made partitions before this
			-- command: at its end, a partition whose pg_inherits row this
			-- transaction wrote and that is not one of them was attached
			-- by it. A transaction without an xid yet wrote none.
			PERFORM set_config('pgjet.partitions_before', CASE WHEN pg_current_xact_id_if_assigned() IS NULL THEN ''
				ELSE (SELECT coalesce(string_agg(i.inhrelid::text, ','), '') FROM pg_inherits i
					WHERE ` + writtenHere("i") + `) END, true);
		END IF;
		RETURN;
	END IF;
	FOR t IN SELECT DISTINCT c.objid::regclass AS rel, k.relkind AS kind, k.relispartition AS part, c.command_tag AS tag,
			coalesce(pg_partition_root(c.objid), c.objid) AS root
		FROM pg_event_trigger_ddl_commands() c JOIN pg_class k ON k.oid = c.objid
		WHERE c.classid = 'pg_class'::regclass AND k.relkind IN ('r', 'p') AND k.relpersistence = 'p'
		AND c.schema_name IS DISTINCT FROM 'pgjet'
	UNION
		-- Partitions an ALTER TABLE of their parent detached: tables of
		-- their own now, whose pg_class row this transaction wrote (the
		-- command names the parent only).
		SELECT k.oid::regclass, k.relkind, false, 'DETACH', k.oid
		FROM pg_class k JOIN pg_namespace n ON n.oid = k.relnamespace
		WHERE EXISTS (SELECT FROM pg_event_trigger_ddl_commands() d JOIN pg_class q ON q.oid = d.objid
				WHERE d.classid = 'pg_class'::regclass AND d.command_tag = 'ALTER TABLE' AND q.relkind = 'p')
		AND k.relkind IN ('r', 'p') AND NOT k.relispartition AND k.relpersistence = 'p' AND k.oid >= 16384
		AND n.nspname NOT IN ('pgjet', 'pg_catalog', 'information_schema')
		AND k.oid NOT IN (SELECT objid FROM pg_event_trigger_ddl_commands())
		AND ` + writtenHere("k") + `
	UNION
		-- Tables an ALTER TABLE of a partitioned table attached: partitions
		-- whose pg_inherits row this command wrote (see the start).
		SELECT k.oid::regclass, k.relkind, true, 'ATTACH', coalesce(pg_partition_root(k.oid), k.oid)
		FROM pg_inherits i JOIN pg_class k ON k.oid = i.inhrelid JOIN pg_namespace n ON n.oid = k.relnamespace
		WHERE EXISTS (SELECT FROM pg_event_trigger_ddl_commands() d JOIN pg_class q ON q.oid = d.objid
				WHERE d.classid = 'pg_class'::regclass AND d.command_tag = 'ALTER TABLE' AND q.relkind = 'p')
		AND k.relkind IN ('r', 'p') AND k.relispartition AND k.relpersistence = 'p'
		AND n.nspname NOT IN ('pgjet', 'pg_catalog', 'information_schema')
		AND ` + writtenHere("i") + `
		AND k.oid::text <> ALL (string_to_array(coalesce(current_setting('pgjet.partitions_before', true), ''), ','))
	LOOP
		created := t.tag NOT IN ('ALTER TABLE', 'DETACH');
		SELECT ` + KeylessSQL + ` INTO keyless FROM pg_class c WHERE c.oid = t.rel;
		FOR p IN SELECT b.oid, b.pubname, b.puballtables AS alltables, b.pubupdate OR b.pubdelete AS ud,
				obj_description(b.oid, 'pg_publication')::jsonb -> 'pgjet' AS cfg,
				(SELECT i.pubname FROM pg_publication i WHERE i.pubowner = b.pubowner
					AND i.pubname = obj_description(b.oid, 'pg_publication')::jsonb -> 'pgjet' ->> 'inserts') AS ins
			FROM pg_publication b JOIN pg_roles o ON o.oid = b.pubowner
			WHERE obj_description(b.oid, 'pg_publication') LIKE '{"pgjet":%' AND (o.rolsuper OR o.rolreplication)
		LOOP
			choice := p.cfg ->> 'keyless';
			ins := p.ins;
			IF t.tag = 'ATTACH' THEN
				IF p.alltables THEN
					CONTINUE; -- its rows were published all along
				END IF;
				-- Publishing it now, through an ancestor: p (all changes) or
				-- ins (inserts only). Before, it was in neither, or in ins.
				via := EXISTS (SELECT FROM pg_publication_rel r WHERE r.prpubid = p.oid
					AND r.prrelid IN (SELECT relid FROM pg_partition_ancestors(t.rel) WHERE relid <> t.rel));
				via_ins := EXISTS (SELECT FROM pg_publication_rel r JOIN pg_publication b ON b.oid = r.prpubid WHERE b.pubname = ins
					AND r.prrelid IN (SELECT relid FROM pg_partition_ancestors(t.rel) WHERE relid <> t.rel));
				in_ins := EXISTS (SELECT FROM pg_publication_rel r JOIN pg_publication b ON b.oid = r.prpubid
					WHERE b.pubname = ins AND r.prrelid = t.rel);
				IF EXISTS (SELECT FROM pg_publication_rel r WHERE r.prpubid = p.oid AND r.prrelid = t.rel)
						OR NOT via AND NOT via_ins OR in_ins AND NOT via THEN
					CONTINUE; -- published as before
				END IF;
				IF in_ins THEN
					-- It follows its root from here on (and, detached again,
					-- joins the list as a table with a key would).
					EXECUTE format('ALTER PUBLICATION %I DROP TABLE %s', ins, t.rel);
				END IF;
				-- Not ONLY: an attached partitioned table brings the rows of
				-- its partitions.
				EXECUTE format('SELECT EXISTS (SELECT FROM %s)', t.rel) INTO has_rows;
				IF has_rows THEN
					` + unsynced(`'pgjet: table % was attached as a partition of %, which publication % publishes, holding rows %', t.rel, t.root::regclass,
						CASE WHEN via THEN p.pubname ELSE ins END,
						CASE WHEN in_ins THEN 'whose updates and deletes no replica got' ELSE 'that no replica got' END`) + `
				END IF;
				CONTINUE;
			END IF;
			published := p.alltables OR EXISTS (SELECT FROM pg_publication_rel r WHERE r.prpubid = p.oid AND r.prrelid IN (t.rel, t.root));
			IF t.tag = 'DETACH' AND (published OR EXISTS (SELECT FROM pg_publication_rel r JOIN pg_publication b ON b.oid = r.prpubid
					WHERE b.pubname = ins AND r.prrelid = t.rel)) THEN
				CONTINUE;
			END IF;
			IF NOT published AND NOT t.part AND coalesce((p.cfg ->> 'new_tables')::boolean, false) THEN
				IF t.tag = 'ALTER TABLE' THEN
					IF keyless THEN
						CONTINUE;
					END IF;
					IF EXISTS (SELECT FROM pg_publication_rel r JOIN pg_publication b ON b.oid = r.prpubid
							WHERE b.pubname = ins AND r.prrelid = t.rel) THEN
						-- Published inserts only, and it has a key now.
						EXECUTE format('ALTER PUBLICATION %I DROP TABLE %s', ins, t.rel);
						EXECUTE format('ALTER PUBLICATION %I ADD TABLE %s', p.pubname, t.rel);
						RAISE NOTICE 'pgjet: table % has a key now: its updates and deletes are replicated from here on (rows changed before may differ on replicas)', t.rel;
						CONTINUE;
					END IF;
					-- Left out, and it has a usable identity now (or it was
					-- UNLOGGED): it joins, and the rows it holds, which no
					-- replica got, are named for a resync.
					EXECUTE format('ALTER PUBLICATION %I ADD TABLE %s', p.pubname, t.rel);
					EXECUTE format('SELECT EXISTS (SELECT FROM ONLY %s)', t.rel) INTO has_rows;
					IF has_rows THEN
						` + unsynced(`'pgjet: table % joined publication % holding rows that no replica got', t.rel, p.pubname`) + `
					END IF;
					CONTINUE;
				END IF;
				IF keyless AND (choice = 'exclude' OR choice = 'inserts-only' AND ins IS NULL) THEN
					IF t.tag <> 'DETACH' THEN
						RAISE NOTICE 'pgjet: table % has no primary key and is left out of publication % (pgjet-capture --keyless %): it is not replicated', t.rel, p.pubname, choice;
					END IF;
					CONTINUE;
				END IF;
				IF t.tag NOT IN ('CREATE TABLE', 'DETACH') THEN
					EXECUTE format('SELECT EXISTS (SELECT FROM ONLY %s)', t.rel) INTO has_rows;
					IF has_rows THEN
						RAISE EXCEPTION 'pgjet: % wrote rows into % before it could join publication %, so they would never be replicated', t.tag, t.rel, p.pubname
							USING HINT = 'Create the table first (or with WITH NO DATA), then INSERT ... SELECT.';
					END IF;
				END IF;
				IF keyless AND choice = 'inserts-only' THEN
					EXECUTE format('ALTER PUBLICATION %I ADD TABLE %s', ins, t.rel);
					RAISE NOTICE 'pgjet: table % has no primary key: only its inserts are replicated (pgjet-capture --keyless inserts-only)', t.rel;
					CONTINUE;
				END IF;
				EXECUTE format('ALTER PUBLICATION %I ADD TABLE %s', p.pubname, t.rel);
				published := true;
			END IF;
			IF published AND keyless AND p.ud AND t.kind = 'r' THEN
				IF created AND choice = 'identity-full' THEN
					EXECUTE format('ALTER TABLE %s REPLICA IDENTITY FULL', t.rel);
					RAISE NOTICE 'pgjet: table % has no primary key: REPLICA IDENTITY FULL set, so that its updates and deletes work and are replicated (pgjet-capture --keyless identity-full)', t.rel;
				ELSE
					RAISE WARNING 'pgjet: UPDATE and DELETE on table % fail from now on: it has no primary key nor replica identity, and publication % publishes them', t.rel, p.pubname
						USING HINT = format('Add a primary key, or ALTER TABLE %s REPLICA IDENTITY FULL.', t.rel);
				END IF;
			END IF;
		END LOOP;
	END LOOP;
END
`
