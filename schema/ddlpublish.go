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
//     left out joins it once it has a key while empty (no row of it can
//     be missing on replicas: an UNLOGGED table set LOGGED, say). A
//     CREATE TABLE AS that wrote rows before the table could join refuses,
//     since those rows would never be replicated.
//
// Partitions follow their root, but their identity is their own: a new
// partition without a key of a published root gets FULL, or the WARNING.
// The function is SECURITY DEFINER (a table's author may not change the
// publication) with a fixed search_path; as an event trigger function it
// cannot be called outside a schema change, and it heeds only publications
// a superuser owns, whose comment no one else may write.

// DDLPublishFunction is the event trigger function that adds tables made
// after capture started to pgjet's publications (see above).
const DDLPublishFunction = "pgjet.ddl_publish()"

// DDLFunctions are the functions DDL capture installs, each with its body.
var DDLFunctions = []struct{ Name, Body string }{{DDLFunction, DDLFunctionBody}, {DDLPublishFunction, DDLPublishFunctionBody}}

// KeylessComment is the comment capture puts on its publication: what
// DDLPublishFunction does with the tables made later. keyless is the
// choice for those without a key ("" for none: they are published and
// warned of); newTables says the publication lists tables but stands for
// all of them; inserts names the publication of inserts only.
func KeylessComment(keyless string, newTables bool, inserts string) string {
	cfg := map[string]any{}
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

// DDLPublishFunctionBody is the PL/pgSQL body of DDLPublishFunction.
const DDLPublishFunctionBody = `
DECLARE
	t record;
	p record;
	keyless boolean;
	published boolean;
	created boolean;
	has_rows boolean;
	choice text;
	ins text;
BEGIN
	FOR t IN SELECT DISTINCT c.objid::regclass AS rel, k.relkind AS kind, k.relispartition AS part, c.command_tag AS tag,
			coalesce(pg_partition_root(c.objid), c.objid) AS root
		FROM pg_event_trigger_ddl_commands() c JOIN pg_class k ON k.oid = c.objid
		WHERE c.classid = 'pg_class'::regclass AND k.relkind IN ('r', 'p') AND k.relpersistence = 'p'
		AND c.schema_name IS DISTINCT FROM 'pgjet'
	LOOP
		created := t.tag <> 'ALTER TABLE';
		SELECT ` + KeylessSQL + ` INTO keyless FROM pg_class c WHERE c.oid = t.rel;
		FOR p IN SELECT b.oid, b.pubname, b.puballtables AS alltables, b.pubupdate OR b.pubdelete AS ud,
				obj_description(b.oid, 'pg_publication')::jsonb -> 'pgjet' AS cfg
			FROM pg_publication b JOIN pg_roles o ON o.oid = b.pubowner
			WHERE obj_description(b.oid, 'pg_publication') LIKE '{"pgjet":%' AND o.rolsuper
		LOOP
			choice := p.cfg ->> 'keyless';
			ins := p.cfg ->> 'inserts';
			published := p.alltables OR EXISTS (SELECT FROM pg_publication_rel r WHERE r.prpubid = p.oid AND r.prrelid IN (t.rel, t.root));
			IF NOT published AND NOT t.part AND coalesce((p.cfg ->> 'new_tables')::boolean, false) THEN
				IF NOT created THEN
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
					-- Left out, and it has a key now (or it was UNLOGGED): it
					-- joins while no row of it could be missing on replicas.
					EXECUTE format('SELECT EXISTS (SELECT FROM ONLY %s)', t.rel) INTO has_rows;
					IF has_rows THEN
						RAISE NOTICE 'pgjet: table % stays out of publication %: it holds rows the replicas never got', t.rel, p.pubname;
						CONTINUE;
					END IF;
					EXECUTE format('ALTER PUBLICATION %I ADD TABLE %s', p.pubname, t.rel);
					CONTINUE;
				END IF;
				IF keyless AND choice = 'exclude' THEN
					RAISE NOTICE 'pgjet: table % has no primary key and is left out of publication % (pgjet-capture --keyless exclude): it is not replicated', t.rel, p.pubname;
					CONTINUE;
				END IF;
				IF t.tag <> 'CREATE TABLE' THEN
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
