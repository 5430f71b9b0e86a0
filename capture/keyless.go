package capture

// Tables without a key under capture's publication.
//
// Postgres refuses every UPDATE and DELETE of a table that a publication
// publishes them for when the table has no replica identity: no primary
// key under REPLICA IDENTITY DEFAULT, an index identity whose index is
// gone, or NOTHING ("cannot update table ... because it does not have a
// replica identity and publishes updates"). A FOR ALL TABLES publication
// made on a database with such a table would break the application. So
// capture lists them before it makes its publication, and stops until the
// operator chooses, for all (--keyless) or per table (--keyless-table); a
// publication made before (by roles.sql, or an earlier pgjet) breaks them
// already, so there it warns and goes on. The choices:
//
//   - identity-full: capture sets REPLICA IDENTITY FULL on them (each
//     named in the log): their changes are replicated, found on replicas
//     by the whole old row;
//   - exclude: they are left out of the publication;
//   - inserts-only: they go into a second publication, of inserts only
//     (InsertsPublication), so UPDATE and DELETE on them are not published.
//
// A FOR ALL TABLES publication cannot leave a table out, so the last two
// make the publication a list of tables that stands for all of them:
// pgjet's DDL capture adds each table made later to it, in the transaction
// that makes it (schema.DDLPublishFunction), and the choice of --keyless
// goes for new tables without a key. See
// https://www.postgresql.org/docs/15/logical-replication-publication.html

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgjet/pgjet/schema"
	"github.com/pgjet/pgjet/schema/pgerr"
	"github.com/pgjet/pgjet/stream"
)

// The choices for tables without a key (Config.Keyless).
const (
	KeylessIdentityFull = "identity-full"
	KeylessExclude      = "exclude"
	KeylessInsertsOnly  = "inserts-only"
)

var keylessChoices = []string{KeylessIdentityFull, KeylessExclude, KeylessInsertsOnly}

// InsertsPublication is the publication of the tables whose inserts alone
// capture publishes (--keyless inserts-only), beside publication pub. No
// default publication name holds a ':'.
func InsertsPublication(pub string) string { return pub + ":inserts" }

// keylessRule is one --keyless-table pattern=choice.
type keylessRule struct{ pattern, choice string }

// validateKeyless checks --keyless and --keyless-table.
func (c *Config) validateKeyless() error {
	var errs []error
	if c.Keyless != "" && !validChoice(c.Keyless) {
		errs = append(errs, fmt.Errorf("--keyless %q: use %s", c.Keyless, strings.Join(keylessChoices, ", ")))
	}
	for _, r := range c.KeylessTables {
		pattern, choice, ok := strings.Cut(r, "=")
		switch {
		case !ok || !validChoice(choice):
			errs = append(errs, fmt.Errorf("--keyless-table %q: use schema.table=CHOICE with CHOICE one of %s", r, strings.Join(keylessChoices, ", ")))
		default:
			errs = append(errs, validatePatterns("--keyless-table", []string{pattern}, 2))
		}
	}
	return errors.Join(errs...)
}

func validChoice(s string) bool {
	for _, c := range keylessChoices {
		if s == c {
			return true
		}
	}
	return false
}

// keylessChoice is the choice for table schemaName.name: the first
// --keyless-table pattern that matches it, else --keyless.
func (c *Config) keylessChoice(schemaName, name string) string {
	qn := schemaName + "." + name
	for _, r := range c.KeylessTables {
		pattern, choice, _ := strings.Cut(r, "=")
		if ok, _ := path.Match(pattern, qn); ok {
			return choice
		}
	}
	return c.Keyless
}

// listsTables reports whether capture's publication must be a list of
// tables (rather than FOR ALL TABLES) for --keyless to hold for tables
// made later.
func (c *Config) listsTables() bool {
	return c.Keyless == KeylessExclude || c.Keyless == KeylessInsertsOnly
}

// querier is what reading the catalogs needs of a pool or a connection.
type querier interface {
	queryRower
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// keylessTable is a published table whose UPDATE and DELETE Postgres
// refuses, with the top-level table of its partition tree (itself unless
// it is a partition): a partition is left out or published inserts only
// with its whole tree.
type keylessTable struct {
	schema, name         string
	rootSchema, rootName string
	choice               string
}

func (k keylessTable) String() string { return k.schema + "." + k.name }
func (k keylessTable) sql() string    { return qualified(k.schema, k.name) }
func (k keylessTable) rootSQL() string {
	return qualified(k.rootSchema, k.rootName)
}

// findKeyless lists the tables without a replica identity that would be
// published with UPDATE or DELETE: by the existing publications pubs, or,
// when none exists yet, by the one capture is about to make (all tables,
// or the tables of --tables and their partitions).
func findKeyless(ctx context.Context, q querier, pubs []string, all bool, tables []string) ([]keylessTable, error) {
	named := make([]string, len(tables))
	for i, t := range tables {
		s, n, _ := strings.Cut(t, ".")
		named[i] = qualified(s, n)
	}
	rows, err := q.Query(ctx, `WITH c AS (SELECT c.*, ARRAY[c.oid] || ARRAY(SELECT relid FROM pg_partition_ancestors(c.oid)) AS tree,
			coalesce(pg_partition_root(c.oid), c.oid) AS root
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'r' AND c.relpersistence = 'p' AND c.oid >= 16384
		AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%')
		SELECT n.nspname, c.relname, rn.nspname, r.relname
		FROM c JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_class r ON r.oid = c.root JOIN pg_namespace rn ON rn.oid = r.relnamespace
		WHERE (`+schema.KeylessSQL+`)
		AND (EXISTS (SELECT 1 FROM pg_publication p, pg_get_publication_tables(p.pubname) g
				WHERE p.pubname = ANY($1) AND (p.pubupdate OR p.pubdelete) AND g.relid = ANY(c.tree))
			OR $2
			OR EXISTS (SELECT 1 FROM unnest($3::text[]) t WHERE to_regclass(t) = ANY(c.tree)))
		ORDER BY 1, 2`, pubs, all, named)
	if err != nil {
		return nil, fmt.Errorf("list tables without a replica identity: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (keylessTable, error) {
		var k keylessTable
		err := row.Scan(&k.schema, &k.name, &k.rootSchema, &k.rootName)
		return k, err
	})
	if err != nil {
		return nil, fmt.Errorf("list tables without a replica identity: %w", err)
	}
	return out, nil
}

// keylessRemedy is the end of every line that asks for a choice.
const keylessRemedy = "choose for them: --keyless identity-full (capture sets REPLICA IDENTITY FULL on them), --keyless exclude (leave them out of the publication) or --keyless inserts-only (publish their inserts only), or per table with --keyless-table schema.table=CHOICE; or give them a primary key"

// keylessLine names the tables without a choice and the choices.
func keylessLine(publication string, tables []keylessTable) string {
	names := make([]string, len(tables))
	for i, k := range tables {
		names[i] = k.String()
	}
	return fmt.Sprintf("tables without a primary key nor replica identity: %s; once publication %s publishes them, every UPDATE and DELETE on them fails on the primary: %s",
		listSome(names), publication, keylessRemedy)
}

// pubState is what capture reads of its publication.
type pubState struct {
	exists, allTables, viaRoot, schemas bool
	inserts                             bool // InsertsPublication exists
	owned                               bool // the role may change it (or it is missing)
	comment                             string
}

func readPublication(ctx context.Context, q queryRower, pub string) (pubState, error) {
	var s pubState
	var comment *string
	err := q.QueryRow(ctx, `SELECT p.oid IS NOT NULL, coalesce(p.puballtables, false), coalesce(p.pubviaroot, false),
			EXISTS (SELECT 1 FROM pg_publication_namespace s WHERE s.pnpubid = p.oid),
			EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $2), p.oid IS NULL OR pg_has_role(p.pubowner, 'USAGE'),
			obj_description(p.oid, 'pg_publication')
		FROM (SELECT 1) x LEFT JOIN pg_publication p ON p.pubname = $1`, pub, InsertsPublication(pub)).
		Scan(&s.exists, &s.allTables, &s.viaRoot, &s.schemas, &s.inserts, &s.owned, &comment)
	if err != nil {
		return s, fmt.Errorf("read publication %q: %w", pub, err)
	}
	if comment != nil {
		s.comment = *comment
	}
	return s, nil
}

// keylessPlan is what capture does about the tables without a key.
type keylessPlan struct {
	full, out, inserts []keylessTable
	unresolved         []keylessTable
}

// planKeyless finds the tables without a key that the publication (made
// or to be made) publishes, and sorts them by choice.
func (c *Config) planKeyless(ctx context.Context, q querier, st pubState) (keylessPlan, error) {
	var p keylessPlan
	var found []keylessTable
	var err error
	if st.exists {
		found, err = findKeyless(ctx, q, []string{c.Publication, InsertsPublication(c.Publication)}, false, nil)
	} else {
		found, err = findKeyless(ctx, q, nil, len(c.Tables) == 0, c.Tables)
	}
	if err != nil {
		return p, err
	}
	for _, k := range found {
		k.choice = c.keylessChoice(k.schema, k.name)
		switch k.choice {
		case KeylessIdentityFull:
			p.full = append(p.full, k)
		case KeylessExclude:
			p.out = append(p.out, k)
		case KeylessInsertsOnly:
			p.inserts = append(p.inserts, k)
		default:
			p.unresolved = append(p.unresolved, k)
		}
	}
	return p, nil
}

// roots are the distinct top-level tables of tables, as SQL.
func roots(tables ...[]keylessTable) []string {
	seen := map[string]bool{}
	var out []string
	for _, ts := range tables {
		for _, k := range ts {
			if r := k.rootSQL(); !seen[r] {
				seen[r] = true
				out = append(out, r)
			}
		}
	}
	return out
}

// ensurePublication makes capture's publication when it is missing, after
// dealing with the tables without a key it would publish (see the top of
// this file), and returns the publications to stream from. It changes
// nothing before every such table has a choice. Its statements are not
// schema changes to replicate.
//
// What it changes, it changes in one transaction holding the advisory lock
// pgjet's DDL capture takes shared for each table it handles
// (schema.PublicationLockKey), reading the tables again once it holds it:
// a table made meanwhile is then either in the list it makes or added by
// DDL capture to the publication it made. The lock is only tried, so that
// schema changes never queue behind a capture waiting for one still in
// progress (a long migration): capture waits for them instead.
func (c *Capture) ensurePublication(ctx context.Context, pool *pgxpool.Pool, role string) ([]string, error) {
	backoff, waited := 50*time.Millisecond, false
	for {
		var ch *pubChange
		busy := false
		err := ownTx(ctx, pool, func(tx pgx.Tx) error {
			var err error
			if ch, err = c.planPublication(ctx, tx); err != nil || !ch.changes() {
				return err
			}
			var locked bool
			if err := tx.QueryRow(ctx, "SELECT pg_try_advisory_xact_lock("+schema.PublicationLockKey+")").Scan(&locked); err != nil {
				return fmt.Errorf("lock publication %q: %w", c.cfg.Publication, err)
			}
			if !locked {
				busy = true
				return nil
			}
			// Read again under the lock: tables made before it are all
			// committed now.
			if ch, err = c.planPublication(ctx, tx); err != nil {
				return err
			}
			return c.applyPublication(ctx, tx, role, ch)
		})
		if err != nil {
			return nil, err
		}
		if !busy {
			ch.report(c)
			return ch.pubs, nil
		}
		if !waited {
			waited = true
			c.log.Info().Str("publication", c.cfg.Publication).Msg("waiting for schema changes in progress to end before changing the publication")
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// pubChange is what ensurePublication does to the publication, planned in
// planPublication and done in applyPublication.
type pubChange struct {
	st         pubState
	plan       keylessPlan
	slotExists bool
	with       string   // WITH clause of a publication made
	stmts      []string // run in order
	makeIns    bool     // make InsertsPublication, empty
	comment    string   // the comment to set, "" to leave it
	unmarked   bool     // the comment should change, but the role may not change it
	made       string   // what the publication now holds, for the log
	remade     string   // what it held before it was made again, "" if it was not
	pubs       []string // the publications to stream from
}

// changes reports whether ch changes anything on the source.
func (ch *pubChange) changes() bool {
	return len(ch.stmts) > 0 || ch.makeIns || ch.comment != ""
}

// planPublication reads the publication and the tables, and plans what
// ensurePublication does, or returns the FatalError that stops capture.
func (c *Capture) planPublication(ctx context.Context, tx pgx.Tx) (*pubChange, error) {
	pub, ins := c.cfg.Publication, InsertsPublication(c.cfg.Publication)
	st, err := readPublication(ctx, tx, pub)
	if err != nil {
		return nil, err
	}
	plan, err := c.cfg.planKeyless(ctx, tx, st)
	if err != nil {
		return nil, err
	}
	ch := &pubChange{st: st, plan: plan}
	if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)", c.cfg.Slot).Scan(&ch.slotExists); err != nil {
		return nil, fmt.Errorf("look up slot %q: %w", c.cfg.Slot, err)
	}
	switch {
	case !st.inserts && ch.slotExists && (len(plan.inserts) > 0 || c.cfg.Keyless == KeylessInsertsOnly):
		// Decoding resolves publication_names in the catalog as of each
		// change: one made after the slot's position stops it for good
		// ("publication does not exist").
		return nil, pgerr.Fatalf(nil, "--keyless inserts-only needs publication %s, which an earlier pgjet did not make; Postgres 15 cannot decode a publication made after the slot's position, so it can only be made with the slot: choose identity-full or exclude for %s, or start the source again (pgjet drop source, then pgjet-capture)",
			ins, strings.Join(roots(plan.inserts), ", "))
	case len(plan.unresolved) > 0 && !st.exists:
		return nil, pgerr.Fatalf(nil, "%s", keylessLine(pub, plan.unresolved))
	}
	if (st.exists && st.viaRoot) || (!st.exists && c.cfg.Partitions == "root") {
		ch.with = " WITH (publish_via_partition_root = true)"
	}
	// A list is needed to leave tables out, or for --keyless to leave out
	// tables made later; a list capture made stands for all tables (its
	// comment says so) and stays one.
	left := roots(plan.out, plan.inserts)
	wantList := len(left) > 0 || len(c.cfg.Tables) == 0 && c.cfg.listsTables()
	newTables := strings.Contains(st.comment, `"new_tables":true`)
	for _, k := range plan.full {
		ch.stmts = append(ch.stmts, "ALTER TABLE "+k.sql()+" REPLICA IDENTITY FULL")
	}
	// Made with the slot, empty unless needed: a later choice of
	// inserts-only can only use a publication that is older than the
	// slot's position (see above).
	ch.makeIns = !st.inserts && !ch.slotExists
	switch {
	case !st.exists && !wantList:
		target := "FOR ALL TABLES"
		if len(c.cfg.Tables) > 0 {
			names := make([]string, len(c.cfg.Tables))
			for i, t := range c.cfg.Tables {
				s, n, _ := strings.Cut(t, ".")
				names[i] = qualified(s, n)
			}
			target = "FOR TABLE " + strings.Join(names, ", ")
		}
		ch.stmts = append(ch.stmts, "CREATE PUBLICATION "+quoteIdent(pub)+" "+target+ch.with)
		ch.made = target
	case !st.exists || st.allTables && wantList:
		if st.schemas {
			return nil, pgerr.Fatalf(nil, "publication %s publishes schemas, so tables %s cannot be left out of it nor published inserts only; remove them from it by hand, or choose --keyless identity-full", pub, strings.Join(left, ", "))
		}
		list, err := c.listTables(ctx, tx, left)
		if err != nil {
			return nil, err
		}
		if st.exists {
			// One transaction: the slot never decodes a change while the
			// publication is missing.
			ch.stmts = append(ch.stmts, "DROP PUBLICATION "+quoteIdent(pub))
			ch.remade = "FOR ALL TABLES"
			// The comment went with it.
			st.comment = ""
		}
		target := ""
		if len(list) > 0 {
			target = " FOR TABLE " + strings.Join(list, ", ")
		}
		ch.stmts = append(ch.stmts, "CREATE PUBLICATION "+quoteIdent(pub)+target+ch.with)
		ch.made = fmt.Sprintf("a list of %d tables, standing for all tables", len(list))
		if len(c.cfg.Tables) > 0 {
			ch.made = fmt.Sprintf("the %d tables of --tables", len(list))
		}
		if len(left) > 0 {
			ch.made += ", but " + strings.Join(left, ", ")
		}
		if r := roots(plan.inserts); len(r) > 0 {
			ch.stmts = append(ch.stmts, "ALTER PUBLICATION "+quoteIdent(ins)+" ADD TABLE "+strings.Join(r, ", "))
		}
		newTables = len(c.cfg.Tables) == 0
	default:
		// An existing list: take the tables out, and publish the inserts
		// of those that want it.
		for _, r := range left {
			ch.stmts = append(ch.stmts, "ALTER PUBLICATION "+quoteIdent(pub)+" DROP TABLE IF EXISTS "+r)
		}
		if r := roots(plan.inserts); len(r) > 0 {
			ch.stmts = append(ch.stmts, "ALTER PUBLICATION "+quoteIdent(ins)+" ADD TABLE "+strings.Join(r, ", "))
		}
	}
	// The comment tells DDL capture what to do with tables made later. A
	// publication capture may not change (made by roles.sql) cannot take
	// one: tables made later are then left to Postgres.
	if comment := schema.KeylessComment(c.cfg.Keyless, newTables, ins, c.cfg.Name); comment != st.comment {
		if st.owned || !st.exists || ch.remade != "" {
			ch.comment = comment
		} else {
			ch.unmarked = true
		}
	}
	ch.pubs = []string{pub}
	if st.inserts || ch.makeIns {
		ch.pubs = append(ch.pubs, ins)
	}
	return ch, nil
}

// applyPublication makes the changes ch plans in tx.
func (c *Capture) applyPublication(ctx context.Context, tx pgx.Tx, role string, ch *pubChange) error {
	pub, ins := c.cfg.Publication, InsertsPublication(c.cfg.Publication)
	if ch.makeIns {
		// A role that may not make one (no CREATE on the database) goes
		// without.
		err := savepoint(ctx, tx, "CREATE PUBLICATION "+quoteIdent(ins)+withPublish(ch.with, "insert"))
		switch {
		case err == nil:
			c.made.add(func(s *madeSet) { s.inserts = true })
		case pgerr.PgCode(err) == pgerr.CodeInsufficientPriv && len(ch.plan.inserts) == 0 && c.cfg.Keyless != KeylessInsertsOnly:
			c.log.Info().Err(err).Str("publication", ins).Msg("no publication of inserts only: this role may not make one, so --keyless inserts-only will need the slot made again")
			ch.pubs = ch.pubs[:1]
		default:
			return c.publicationError(err, role, ch.st, ch.plan)
		}
	}
	for _, s := range ch.stmts {
		if _, err := tx.Exec(ctx, s); err != nil {
			return c.publicationError(fmt.Errorf("%s: %w", s, err), role, ch.st, ch.plan)
		}
	}
	if ch.comment == "" {
		return nil
	}
	if _, err := tx.Exec(ctx, "COMMENT ON PUBLICATION "+quoteIdent(pub)+" IS "+quoteLiteral(ch.comment)); err != nil {
		return fmt.Errorf("mark publication %q: %w", pub, err)
	}
	return nil
}

// report logs what ensurePublication found and did.
func (ch *pubChange) report(c *Capture) {
	pub, ins := c.cfg.Publication, InsertsPublication(c.cfg.Publication)
	if len(ch.plan.unresolved) > 0 {
		// The publication breaks them already, with capture running or
		// not: stopping would only stop replication.
		c.log.Warn().Str("publication", pub).Msg(keylessLine(pub, ch.plan.unresolved))
	}
	if ch.unmarked {
		c.log.Info().Str("publication", pub).Msg("publication not marked as pgjet's (the role does not own it): pgjet's DDL capture neither warns of nor deals with tables made later without a key")
	}
	if ch.st.exists && ch.st.viaRoot != (c.cfg.Partitions == "root") {
		c.log.Warn().Str("publication", pub).Bool("publish_via_partition_root", ch.st.viaRoot).
			Msg("existing publication disagrees with --partitions; it is used as it is (ALTER PUBLICATION ... SET (publish_via_partition_root = ...) to change it)")
	}
	if len(ch.stmts) == 0 {
		return
	}
	for _, k := range ch.plan.full {
		c.log.Warn().Str("table", k.String()).Msg("REPLICA IDENTITY FULL set: the table has no primary key (--keyless identity-full); its updates and deletes are replicated, found on replicas by the whole old row")
	}
	for _, k := range ch.plan.out {
		c.log.Warn().Str("table", k.String()).Str("left_out", k.rootSQL()).Msg("left out of the publication: the table has no primary key (--keyless exclude); it is not replicated")
	}
	for _, k := range ch.plan.inserts {
		c.log.Warn().Str("table", k.String()).Str("publication", ins).Msg("inserts only: the table has no primary key (--keyless inserts-only); its updates and deletes are not replicated")
	}
	switch {
	case ch.remade != "":
		c.log.Info().Str("publication", pub).Str("was", ch.remade).Str("tables", ch.made).Msg("publication made a list of tables")
	case ch.made != "":
		if !ch.st.exists {
			c.made.add(func(s *madeSet) { s.publication = true })
		}
		c.log.Info().Str("publication", pub).Str("tables", ch.made).Msg("publication created")
	}
}

// withPublish adds publish = actions to a WITH clause.
func withPublish(with, actions string) string {
	if with == "" {
		return " WITH (publish = '" + actions + "')"
	}
	return strings.TrimSuffix(with, ")") + ", publish = '" + actions + "')"
}

// listTables lists the top-level tables a FOR ALL TABLES publication would
// publish (or those of --tables), but pgjet's own and those of left.
func (c *Capture) listTables(ctx context.Context, q querier, left []string) ([]string, error) {
	skip := map[string]bool{}
	for _, l := range left {
		skip[l] = true
	}
	var names []string
	if len(c.cfg.Tables) > 0 {
		for _, t := range c.cfg.Tables {
			s, n, _ := strings.Cut(t, ".")
			names = append(names, qualified(s, n))
		}
	} else {
		rows, err := q.Query(ctx, `SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relpersistence = 'p' AND c.oid >= 16384
			AND n.nspname NOT IN ('pg_catalog', 'information_schema', $1) AND n.nspname NOT LIKE 'pg\_toast%'
			ORDER BY 1, 2`, schema.Own)
		if err != nil {
			return nil, fmt.Errorf("list tables: %w", err)
		}
		pairs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (string, error) {
			var s, n string
			err := row.Scan(&s, &n)
			return qualified(s, n), err
		})
		if err != nil {
			return nil, fmt.Errorf("list tables: %w", err)
		}
		names = pairs
	}
	var out []string
	for _, n := range names {
		if !skip[n] {
			out = append(out, n)
		}
	}
	return out, nil
}

// ownTx runs f in a transaction with DDL capture off: capture's own
// changes of the source are not schema changes to replicate.
func ownTx(ctx context.Context, pool *pgxpool.Pool, f func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_catalog.set_config($1, 'off', true)", schema.DDLOffSetting); err != nil {
			return err
		}
		return f(tx)
	})
}

// savepoint runs stmt in tx under a savepoint: its failure leaves tx
// usable.
func savepoint(ctx context.Context, tx pgx.Tx, stmt string) error {
	return pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error {
		_, err := sp.Exec(ctx, stmt)
		return err
	})
}

// publicationError names what to do when capture may not make or change
// its publication, or set a table's identity.
func (c *Capture) publicationError(err error, role string, st pubState, plan keylessPlan) error {
	switch pgerr.PgCode(err) {
	case pgerr.CodeInsufficientPriv:
		what := "create publication " + c.cfg.Publication
		switch {
		case len(plan.full) > 0:
			what = "set REPLICA IDENTITY FULL on " + strings.Join(roots(plan.full), ", ") + " or change publication " + c.cfg.Publication
		case st.exists:
			what = "change publication " + c.cfg.Publication
		}
		return pgerr.Fatalf(err, "role %q may not %s on %s (%v); run pgjet-capture once as a superuser (or the tables' owner) with the same flags", role, what, c.where(), err)
	case pgerr.CodeUndefinedTable:
		return pgerr.Fatalf(err, "a table in --tables does not exist on %s; fix --tables", c.where())
	case pgerr.CodeDuplicateObject:
		return fmt.Errorf("publication %q was created concurrently: %w", c.cfg.Publication, err) // retried
	}
	return fmt.Errorf("make publication %q: %w", c.cfg.Publication, err)
}

// checkKeyless is --check-config's view of ensurePublication's first step.
func checkKeyless(ctx context.Context, conn *pgx.Conn, cfg Config) stream.CheckResult {
	const name = "tables without a key"
	st, err := readPublication(ctx, conn, cfg.Publication)
	if err != nil {
		return stream.Fail(name, "%v", err)
	}
	plan, err := cfg.planKeyless(ctx, conn, st)
	switch {
	case err != nil:
		return stream.Fail(name, "%v", err)
	case len(plan.unresolved) > 0 && !st.exists:
		return stream.Fail(name, "%s", keylessLine(cfg.Publication, plan.unresolved))
	case len(plan.unresolved) > 0:
		return stream.Warn(name, "%s", keylessLine(cfg.Publication, plan.unresolved))
	case len(plan.full)+len(plan.out)+len(plan.inserts) == 0:
		return stream.Pass(name, "every table the publication holds has a replica identity")
	}
	var parts []string
	for _, g := range []struct {
		what   string
		tables []keylessTable
	}{{"REPLICA IDENTITY FULL set on", plan.full}, {"left out", plan.out}, {"inserts only", plan.inserts}} {
		if len(g.tables) > 0 {
			names := make([]string, len(g.tables))
			for i, k := range g.tables {
				names[i] = k.String()
			}
			parts = append(parts, g.what+" "+listSome(names))
		}
	}
	return stream.Pass(name, "no primary key, capture deals with them on start: %s", strings.Join(parts, "; "))
}
