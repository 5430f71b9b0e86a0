package apply

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/pgjet/pgjet/schema/pgerr"
	"github.com/pgjet/pgjet/schema/redact"
	"github.com/pgjet/pgjet/stream"
)

// Policy says how a change that collides with the target's rows is
// resolved. Every collision is recorded in pgjet.conflicts with the
// decision, whatever the policy.
//
// Conflict kinds:
//
//   - insert_exists: an insert finds its key taken;
//   - update_missing, delete_missing: the row to change is gone;
//   - update_changed, delete_changed: the row to change was last written
//     by someone else than this source: locally, or by the applier of
//     another source. Detected only with replication origins and
//     track_commit_timestamp = on, and not under source-wins;
//   - unique_violation: the new values collide with another row on a
//     unique index other than the key. keep-local skips the change; the
//     other policies stop the applier, as pgjet does not delete a row of
//     another key to make room (under source-wins the statement itself
//     fails; the others check first and record the conflict).
type Policy uint8

const (
	// PolicySourceWins applies the incoming change: an insert whose key
	// exists updates the row, an update of a missing row inserts it whole.
	// Right for read replicas; rows are applied in batches.
	PolicySourceWins Policy = iota
	// PolicyLastWriterWins keeps the newer row version: the incoming
	// change's source commit time against the local version's commit
	// timestamp, ties decided by source name, so every region decides the
	// same and all converge. A delete wins over a concurrent update (there
	// are no tombstones to compare it with): an update of a missing row is
	// skipped. A key change is a delete of the old key and an insert of
	// the new row, so both regions end with the new row. Each source
	// transaction commits alone on the target, so
	// that every row version carries its own source commit time.
	PolicyLastWriterWins
	// PolicyKeepLocal leaves a row that collides as it is here and skips
	// the change.
	PolicyKeepLocal
	// PolicyError stops the applier at the first collision, naming it.
	PolicyError
)

var policyNames = []string{"source-wins", "last-writer-wins", "keep-local", "error"}

func (p Policy) String() string {
	if int(p) < len(policyNames) {
		return policyNames[p]
	}
	return "policy(" + strconv.Itoa(int(p)) + ")"
}

// ParsePolicy parses a policy name.
func ParsePolicy(s string) (Policy, error) {
	for i, n := range policyNames {
		if s == n {
			return Policy(i), nil
		}
	}
	return 0, fmt.Errorf("unknown conflict policy %q: use %s", s, strings.Join(policyNames, ", "))
}

// ParseConflictTables parses per-table policies given as
// "schema.table=policy,schema.table=policy"; a table without a schema is
// in public.
func ParseConflictTables(s string) (map[string]string, error) {
	m := map[string]string{}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		table, policy, ok := strings.Cut(item, "=")
		table, policy = strings.TrimSpace(table), strings.TrimSpace(policy)
		if !ok || table == "" {
			return nil, fmt.Errorf("%q: want schema.table=policy", item)
		}
		if _, err := ParsePolicy(policy); err != nil {
			return nil, fmt.Errorf("%s: %w", table, err)
		}
		m[qualify(table)] = policy
	}
	return m, nil
}

// policyFor returns the policy of a table.
func (c *Config) policyFor(schemaName, table string) Policy {
	if p, ok := c.ConflictTables[schemaName+"."+table]; ok {
		pol, _ := ParsePolicy(p)
		return pol
	}
	pol, _ := ParsePolicy(c.ConflictPolicy)
	return pol
}

// uses reports whether p is the policy of any table.
func (c *Config) uses(p Policy) bool {
	if pol, err := ParsePolicy(c.ConflictPolicy); err == nil && pol == p {
		return true
	}
	for _, s := range c.ConflictTables {
		if pol, err := ParsePolicy(s); err == nil && pol == p {
			return true
		}
	}
	return false
}

// policies lists the policies in use, for logs.
func (c *Config) policies() string {
	var tables []string
	for t := range c.ConflictTables {
		tables = append(tables, t)
	}
	sort.Strings(tables)
	s := c.ConflictPolicy
	for _, t := range tables {
		s += ", " + t + "=" + c.ConflictTables[t]
	}
	return s
}

// conflictEnv is what conflict statements of a session need to know of the
// target.
type conflictEnv struct {
	source string
	// origin is the roident of this applier's replication origin; 0 when
	// the session runs without one.
	origin uint32
	// legacy is the roident of the origin an earlier pgjet wrote this
	// source under (LegacyOriginName), 0 when there is none: row versions
	// of either are the source's.
	legacy uint32
	// repair is the origin pgjet verify --repair writes the source's rows
	// under in this database (RepairOriginName): they are the source's
	// too.
	repair string
	// commitTS is track_commit_timestamp on the target.
	commitTS bool
	// localName names local writes (roident 0) in records and tie-breaks.
	localName string
}

// localLabel is what local writes are called in pgjet.conflicts when no
// --local-name is given; no source name can look like it.
const localLabel = "(local)"

// originName renders the name of the writer of a row version from its
// roident: a pgjet applier's origin is named by its source, local writes
// by --local-name.
func (cx *conflictEnv) originName(ro string) string {
	local := localLabel
	if cx.localName != "" {
		local = cx.localName
	}
	return "CASE WHEN " + ro + " IS NULL THEN NULL WHEN " + ro + " = 0 THEN " + lit(local) +
		" ELSE (SELECT " + originSourceSQL("r.roname") + " FROM pg_catalog.pg_replication_origin r WHERE r.roident = " + ro + ") END"
}

// writer renders the name and the commit time of the writer of a local
// row version whose xmin is the expression x, and the join they need
// after the FROM item that holds x: typed NULLs without
// track_commit_timestamp. The lookup is made only for rows that collide.
func (cx *conflictEnv) writer(x string) (name, ts, join string) {
	if !cx.commitTS {
		return "NULL::text", "NULL::timestamptz", ""
	}
	return cx.originName("o.roident"), "o.timestamp",
		" LEFT JOIN LATERAL pg_catalog.pg_xact_commit_timestamp_origin(" + x + ") o ON true"
}

// setupOrigin makes the session write under the replication origin
// pgjet_<source>.<database oid> (OriginName), creating it when missing:
// the target's commits then carry the source's commit time and origin,
// which last-writer-wins compares and pgjet-capture on this database
// skips. Without the
// privilege it warns once and the session runs without an origin.
func (s *session) setupOrigin(ctx context.Context) error {
	a := s.a
	db, err := databaseOID(ctx, s.conn)
	if err != nil {
		return err
	}
	name := OriginName(a.cfg.Name, db)
	s.cx = &conflictEnv{source: a.cfg.Name, localName: a.cfg.LocalName, repair: RepairOriginName(a.cfg.Name, db)}
	var on string
	if err := s.conn.QueryRow(ctx, "SELECT current_setting('track_commit_timestamp')").Scan(&on); err != nil {
		return fmt.Errorf("read track_commit_timestamp: %w", err)
	}
	s.cx.commitTS = on == "on"
	if !s.cx.commitTS {
		// keep-local and error tell rows written here by the origin of
		// their row version, which Postgres keeps only with commit
		// timestamps: without them every row would look the source's,
		// and changes (a TRUNCATE too) over local rows would apply as
		// under source-wins, silently.
		why := ""
		switch {
		case a.cfg.uses(PolicyLastWriterWins):
			why = "--conflict last-writer-wins compares the commit times of row versions"
		case a.cfg.uses(PolicyKeepLocal):
			why = "--conflict keep-local tells rows written here by the origin of their row version, which only commit timestamps keep"
		case a.cfg.uses(PolicyError):
			why = "--conflict error tells rows written here by the origin of their row version, which only commit timestamps keep"
		}
		if why != "" {
			return pgerr.Fatalf(nil, "track_commit_timestamp is off on %s, and %s; set track_commit_timestamp = on in postgresql.conf and restart Postgres",
				redact.Postgres(a.cfg.DB), why)
		}
	}

	id, err := takeOrigin(ctx, s.conn, name)
	if err == nil {
		s.cx.legacy, err = legacyOrigin(ctx, s.conn, a.cfg.Name)
	}
	switch {
	case err == nil:
		s.cx.origin = id
	case pgerr.PgCode(err) == pgerr.CodeInsufficientPriv:
		why := ""
		switch {
		case a.cfg.uses(PolicyLastWriterWins):
			why = "--conflict last-writer-wins needs"
		case a.cfg.uses(PolicyKeepLocal), a.cfg.uses(PolicyError):
			// They tell rows written here by the origin of the row
			// version: without one, every row would look the source's,
			// and changes over local rows would apply as source-wins.
			why = "--conflict error needs"
			if a.cfg.uses(PolicyKeepLocal) {
				why = "--conflict keep-local needs"
			}
		case a.cfg.LocalName != "":
			// This database is captured too: unmarked, what this applier
			// writes would be published again and loop between regions.
			why = "--local-name (this database is captured too) needs"
		}
		if why != "" {
			return pgerr.Fatalf(err, "%s the replication origin %q, and the apply role may not use replication origins on %s; run pgjet-apply as a superuser, or GRANT EXECUTE ON FUNCTION pg_replication_origin_oid(text), pg_replication_origin_create(text), pg_replication_origin_session_setup(text), pg_replication_origin_xact_setup(pg_lsn, timestamptz), pg_replication_origin_xact_reset() TO the apply role",
				why, name, redact.Postgres(a.cfg.DB))
		}
		if a.originWarned.CompareAndSwap(false, true) {
			a.log.Warn().Err(err).Str("origin", name).Msg("cannot use replication origins (needs superuser or EXECUTE on pg_replication_origin_* functions): applied rows are not marked as pgjet's, so a capture of this database would publish them again (no active-active)")
		}
		return nil
	case err != nil:
		// CodeObjectInUse too, retried: the origin is held by another
		// session of the same source into this database (a restore
		// ending, an applier stopping).
		return fmt.Errorf("set up replication origin %q: %w", name, err)
	}
	s.originStmt = "pgjet_origin" // prepared with the position update (prepareOwn)
	a.log.Debug().Str("origin", name).Uint32("roident", id).Uint32("legacy_roident", s.cx.legacy).Msg("writing under replication origin")
	return nil
}

// stop is a conflict that the policy says must stop the applier: the
// records (a jsonb array of pgjet.conflicts rows) are written again after
// the rollback, in a transaction of their own.
type stop struct {
	records []byte
}

// stopError builds the error that names a conflict which stops the applier.
func (s *session) stopError(records []byte, in stmtInfo) error {
	var recs []struct {
		Kind     string          `json:"kind"`
		Table    string          `json:"table_name"`
		Key      json.RawMessage `json:"key"`
		Decision string          `json:"decision"`
		Local    struct {
			Rows int64 `json:"rows"`
		} `json:"local_row"`
		LOrigin *string `json:"local_origin"`
		LTime   *string `json:"local_commit_time"`
	}
	_ = json.Unmarshal(records, &recs)
	s.stopped = &stop{records: records}
	kind, table, key, local, fix := "conflict", in.table, "", "", "make the row what it should be"
	if len(recs) > 0 {
		r := recs[0]
		kind, table = r.Kind, r.Table
		if len(r.Key) > 0 && string(r.Key) != "null" {
			key = " key " + string(r.Key)
		}
		switch {
		case kind == kindTruncateChanged && r.LOrigin != nil && r.LTime != nil:
			local = fmt.Sprintf("; %d rows here were written by %s, the newest at %s", r.Local.Rows, *r.LOrigin, *r.LTime)
			fix = "delete those rows here"
		case r.LOrigin != nil && r.LTime != nil:
			local = fmt.Sprintf("; the row here was written by %s at %s", *r.LOrigin, *r.LTime)
		}
	}
	policy := s.a.cfg.policyFor(splitQualified(table))
	return pgerr.Fatalf(nil, "%s on %s%s at LSN %s (stream seq %d, source %s)%s; the conflict policy of the table is %s, which stops here. The conflict is recorded in pgjet.conflicts and nothing of this source transaction was applied: %s (or choose another policy for the table with --conflict-table %s=POLICY) and restart pgjet-apply",
		kind, table, key, in.lsn, in.seq, s.a.cfg.Name, local, policy, fix, table)
}

// kindTruncateChanged is the conflict of a TRUNCATE that meets rows last
// written by someone else than its source (see truncateConflicts).
const kindTruncateChanged = "truncate_changed"

// detects reports whether the session can tell who last wrote a row: it
// writes under its own origin and the target keeps commit timestamps.
func (cx *conflictEnv) detects() bool {
	return cx != nil && cx.origin != 0 && cx.commitTS
}

// writtenElsewhere renders whether the row version whose xmin is the
// expression x was last written by someone else than this source: here,
// or by the applier of another source. A version whose writer is unknown
// (frozen, or committed before track_commit_timestamp was on) counts as
// the source's, as it does for update_changed.
func (cx *conflictEnv) writtenElsewhere(x string) string {
	return "coalesce((SELECT o.timestamp IS NOT NULL AND " + cx.notSource("o.roident") +
		" FROM pg_catalog.pg_xact_commit_timestamp_origin(" + x + ") o), false)"
}

// notSource renders whether the replication origin whose roident is the
// expression ro is neither this applier's, nor the one an earlier pgjet
// wrote the source under (LegacyOriginName), nor the one pgjet verify
// --repair writes the source's rows under (RepairOriginName): the rows
// of each are the source's.
func (cx *conflictEnv) notSource(ro string) string {
	ours := strconv.FormatUint(uint64(cx.origin), 10)
	if cx.legacy != 0 {
		ours += ", " + strconv.FormatUint(uint64(cx.legacy), 10)
	}
	return "(" + ro + " NOT IN (" + ours + ") AND " + ro +
		" IS DISTINCT FROM pg_catalog.pg_replication_origin_oid(" + lit(cx.repair) + "))"
}

// truncateConflicts decides a TRUNCATE of tables under keep-local or error
// (policy statements decide row changes; a TRUNCATE names no rows). It
// locks the tables, then counts in each the rows last written by someone
// else than this source. A table without such rows is truncated as the
// source asks. Under keep-local the others keep those rows and lose only
// the source's: truncateConflicts records one truncate_changed conflict
// (decision skip) per such table and returns them. Under error the first
// such table stops the applier, its conflict recorded, nothing of the
// source transaction applied. The count reads the whole table: the price
// of not wiping rows written here, paid only under these two policies.
func (s *session) truncateConflicts(ctx context.Context, env *stream.Envelope, seq uint64, tables []*plan) (map[*plan]bool, error) {
	// The row changes before the TRUNCATE are part of what it empties.
	if err := s.flush(ctx); err != nil {
		return nil, err
	}
	if err := s.wait(ctx); err != nil {
		return nil, err
	}
	names := make([]string, len(tables))
	for i, p := range tables {
		names[i] = p.t.qname
	}
	info := stmtInfo{seq: seq, lsn: env.CommitLSN, table: strings.Join(names, ", "), op: stream.OpTruncate}
	// Locked before counting, as TRUNCATE would lock them: no local write
	// slips in between the count and the truncate.
	if _, err := s.conn.Exec(ctx, "LOCK TABLE "+strings.Join(names, ", ")+" IN ACCESS EXCLUSIVE MODE"); err != nil {
		return nil, s.stmtError(err, info)
	}
	lsn, ts := env.CommitLSN.String(), env.CommitTime.UTC().Format(timeFormat)
	keep := map[*plan]bool{}
	for _, p := range tables {
		sql := p.truncateCheck(s.a.cfg.Name, s.cx)
		var records []byte
		if err := s.conn.QueryRow(ctx, sql, lsn, ts).Scan(&records); err != nil {
			return nil, s.stmtError(err, stmtInfo{seq: seq, lsn: env.CommitLSN, table: p.t.qname, op: stream.OpTruncate})
		}
		if records == nil {
			continue
		}
		s.a.stats.Conflicts.Add(1)
		if p.policy == PolicyError {
			return nil, s.stopError(records, stmtInfo{seq: seq, lsn: env.CommitLSN, table: p.rel.Schema + "." + p.rel.Name, op: stream.OpTruncate})
		}
		keep[p] = true
	}
	return keep, nil
}

// truncateCheck builds the statement that counts the rows of p's table
// last written by someone else than source and records them as one
// truncate_changed conflict (see truncateConflicts); its parameters are
// the commit LSN and time, as text.
func (p *plan) truncateCheck(source string, cx *conflictEnv) string {
	decision := "skip"
	if p.policy == PolicyError {
		decision = "error"
	}
	rec := newConflictSQL(source, &p.rel, "$1::pg_lsn", "$2::timestamptz")
	name, lts, join := cx.writer("r.x")
	var w with
	// Grouped by transaction first: the writer is looked up once per
	// writing transaction, not once per row.
	w.add("pgjet_r", "SELECT r.n, "+name+" AS w, "+lts+" AS ts FROM (SELECT xmin AS x, count(*) AS n FROM "+p.t.qname+" GROUP BY xmin) r"+join+
		" WHERE "+cx.writtenElsewhere("r.x"))
	w.add("pgjet_k", "SELECT sum(n)::bigint AS n, string_agg(DISTINCT w, ', ' ORDER BY w) AS w, max(ts) AS ts FROM pgjet_r")
	w.add("pgjet_c", insertConflicts("c", rec.record(kindTruncateChanged, "NULL", "jsonb_build_object('rows', k.n)", "NULL", lit(decision), "k.w", "k.ts",
		"FROM pgjet_k k WHERE k.n > 0"))+" RETURNING to_jsonb(c) AS j")
	return w.then("SELECT jsonb_agg(j) FROM pgjet_c")
}

func splitQualified(t string) (string, string) {
	if sch, name, ok := strings.Cut(t, "."); ok {
		return sch, name
	}
	return "public", t
}

// recordStop writes the records of a conflict that stopped the applier,
// after the rollback of its transaction.
func (s *session) recordStop(ctx context.Context) {
	if s.stopped == nil || len(s.stopped.records) == 0 {
		return
	}
	if s.originStmt != "" {
		// The session still holds the last group's source commit time.
		if _, err := s.conn.Exec(ctx, "SELECT pg_replication_origin_xact_reset()"); err != nil {
			s.a.log.Debug().Err(err).Msg("reset replication origin of the transaction")
		}
	}
	if _, err := s.conn.Exec(ctx, "INSERT INTO pgjet.conflicts SELECT * FROM jsonb_populate_recordset(NULL::pgjet.conflicts, $1::jsonb)", string(s.stopped.records)); err != nil {
		s.a.log.Warn().Err(err).Msg("record the conflict that stopped apply")
	}
}

// policyStatement builds the single-row statement of a change under a
// policy other than source-wins. The parameter order matches args(). It
// returns one row: the number of conflicts recorded, and those whose
// decision is 'error' as a jsonb array (NULL when none).
//
// The local row version is read and locked first (FOR UPDATE, which in
// READ COMMITTED returns the newest committed version), then the decision
// is taken on it and the write made only when it says so, so a local
// writer racing the applier cannot slip a newer version in between.
func (p *plan) policyStatement(source string, ch *stream.Change) (string, []uint32) {
	b := &policySQL{p: p, cx: p.env(source), source: source}
	switch ch.Op {
	case stream.OpInsert:
		return b.insert(ch), b.sb.oids
	case stream.OpUpdate, stream.OpDelete:
		return b.change(ch), b.sb.oids
	}
	return "", nil
}

// policySQL builds one policy statement: the CTEs that lock the local
// row version and decide on it, the writes, and the conflict records.
type policySQL struct {
	p      *plan
	cx     *conflictEnv
	source string
	sb     sqlBuilder
	w      with
	// rec renders the conflict records and ts is the parameter of the
	// source commit time; set by commitParams, after the values'.
	rec conflictSQL
	ts  string
}

// commitParams numbers the parameters of the commit LSN and time.
func (b *policySQL) commitParams() {
	lsn := b.sb.param(0)
	b.ts = b.sb.param(timestamptzOID)
	b.rec = newConflictSQL(b.source, &b.p.rel, lsn+"::pg_lsn", b.ts)
}

// Decisions, as SQL over the local version d (pgjet_d).

// notApplied is the decision on a change the policy does not apply.
func (b *policySQL) notApplied() string {
	if b.p.policy == PolicyError {
		return "'error'"
	}
	return "'skip'"
}

// Under error, the changes that meet what pgjet verify --repair wrote
// before the applier reached them are passed over, not stopped at. The
// repair made the rows of a key range the source's as of its read, so a
// change committed before that read is already in them: an insert finds
// its row there (written under the repair's origin: the source held the
// row at the read, so any later insert of its key comes after a delete
// that removes it first), an update or a delete finds its row gone (the
// repair deleted the key, and recorded so, after the change committed).
// Policies other than error already pass over such changes or apply them.

// notAppliedOverRepair is notApplied for an insert that finds the row
// version d: skip when the repair wrote d.
func (b *policySQL) notAppliedOverRepair() string {
	if b.p.policy != PolicyError || !b.cx.detects() {
		return b.notApplied()
	}
	return "CASE WHEN d.repaired THEN 'skip' ELSE 'error' END"
}

// missingDecision is the decision on an update or a delete of the row f
// finds that is gone: skip when a repair deleted it after the change.
func (b *policySQL) missingDecision(f rowFinder) string {
	if b.p.policy != PolicyError {
		return b.notApplied()
	}
	return "CASE WHEN " + b.rec.repairedAway(b.p.t.qname, f.on("k")) + " THEN 'skip' ELSE 'error' END"
}

// uvDecision is the decision on a unique violation.
func (b *policySQL) uvDecision() string {
	if b.p.policy == PolicyKeepLocal {
		return "'skip'"
	}
	return "'error'"
}

// decide renders the decision: apply_remote when apply holds.
func (b *policySQL) decide(apply string) string {
	return "CASE WHEN " + apply + " THEN 'apply_remote' ELSE " + b.notApplied() + " END"
}

// newer renders whether the change is newer than the local version d:
// a later source commit time, ties decided by the source name.
func (b *policySQL) newer() string {
	return "(" + b.ts + " > d.ts OR (" + b.ts + " = d.ts AND " + lit(b.source) + " COLLATE \"C\" > d.n COLLATE \"C\"))"
}

// lwwApply renders when last-writer-wins applies the change over the
// local version d: it was written by this source, or is older.
func (b *policySQL) lwwApply() string { return "(NOT d.changed OR " + b.newer() + ")" }

// lockLocal adds pgjet_l, the local row version found by find over
// alias, locked (the first one when limit), and pgjet_d, its writer.
func (b *policySQL) lockLocal(alias, find string, limit bool) {
	s := "SELECT to_jsonb(" + alias + ") AS j, " + alias + ".xmin AS x, " + alias + ".ctid AS c FROM " + b.p.t.qname + " " + alias + " WHERE " + find
	if limit {
		s += " LIMIT 1"
	}
	b.w.add("pgjet_l", s+" FOR UPDATE OF "+alias)
	b.addWriter("pgjet_d", "pgjet_l", "l")
}

// addWriter adds the CTE name: the row version of the CTE from (its
// version as j, its xmin as x) with its commit time (ts), its writer's
// name (n) and whether someone else than this source wrote it (changed).
func (b *policySQL) addWriter(name, from, alias string) {
	changed := "false"
	if b.cx.origin != 0 && b.cx.commitTS {
		changed = "(o.timestamp IS NOT NULL AND " + b.cx.notSource("o.roident") + ")"
	}
	repaired := ""
	if b.p.policy == PolicyError && b.cx.detects() {
		// Written by pgjet verify --repair (see notAppliedOverRepair).
		repaired = ", coalesce(o.roident = pg_catalog.pg_replication_origin_oid(" + lit(b.cx.repair) + "), false) AS repaired"
	}
	writer, lts, join := b.cx.writer(alias + ".x")
	b.w.add(name, "SELECT "+alias+".j, "+lts+" AS ts, "+writer+" AS n, "+changed+" AS changed"+repaired+" FROM "+from+" "+alias+join)
}

// checkUnique adds pgjet_uv, another row holding the new values (vals)
// of one of the unique indexes idx; not is the condition that excludes
// the row being changed (over alias u), "" for none. It returns whether
// there is one.
func (b *policySQL) checkUnique(idx [][]int, vals []string, not string) string {
	var any []string
	for _, u := range idx {
		var eq []string
		for _, c := range u {
			op := " = "
			if b.p.nullsNotDistinct(u) {
				op = " IS NOT DISTINCT FROM "
			}
			eq = append(eq, "u."+b.p.col(c)+op+vals[c])
		}
		any = append(any, "("+and(eq)+")")
	}
	s := "SELECT to_jsonb(u) AS j FROM " + b.p.t.qname + " u WHERE (" + strings.Join(any, " OR ") + ")"
	if not != "" {
		s += " AND " + not
	}
	b.w.add("pgjet_uv", s+" LIMIT 1")
	return "EXISTS (SELECT 1 FROM pgjet_uv)"
}

// finish renders the statement: the records inserted, and the result row.
func (b *policySQL) finish(records ...string) string {
	b.w.add("pgjet_c", insertConflicts("c", records...)+" RETURNING c.decision, to_jsonb(c) AS j")
	return b.w.then("SELECT count(*), jsonb_agg(j) FILTER (WHERE decision = 'error') FROM pgjet_c")
}

// insert builds the statement of an insert.
func (b *policySQL) insert(ch *stream.Change) string {
	p := b.p
	all := p.allColumns()
	vals := p.params(&b.sb, all)
	b.commitParams()
	remote := p.jsonOf(all, vals)
	key := p.jsonOf(p.keys, vals)
	uv := p.uvIndexes(ch)
	ins := p.insertInto(all) + " SELECT " + commas(vals)
	if !p.upsert {
		// No key to collide on: only other unique indexes can.
		b.checkUnique(uv, vals, "")
		b.w.add("pgjet_ins", ins+" WHERE NOT EXISTS (SELECT 1 FROM pgjet_uv) RETURNING 1")
		return b.finish(b.rec.record("unique_violation", key, "uv.j", remote, b.uvDecision(), "NULL", "NULL", "FROM pgjet_uv uv"))
	}
	apply := "false"
	if p.policy == PolicyLastWriterWins {
		apply = b.lwwApply()
	}
	keyCond := p.match("t", p.keys, vals)
	b.lockLocal("t", keyCond, false)
	blocked := "false"
	if len(uv) > 0 {
		blocked = b.checkUnique(uv, vals, "NOT ("+p.match("u", p.keys, vals)+")")
	}
	b.w.add("pgjet_ins", ins+" WHERE NOT EXISTS (SELECT 1 FROM pgjet_l) AND NOT "+blocked+
		" ON CONFLICT ("+commas(p.colNames(p.keys))+") DO NOTHING RETURNING 1")
	if sets := p.upsertColumns(); len(sets) > 0 && apply != "false" {
		b.w.add("pgjet_upd", "UPDATE "+p.t.qname+" t SET "+p.assign(sets, vals)+" WHERE "+keyCond+
			" AND EXISTS (SELECT 1 FROM pgjet_d d WHERE "+apply+") AND NOT "+blocked+" RETURNING 1")
	}
	records := []string{
		b.rec.record("insert_exists", key, "d.j", remote, "CASE WHEN "+apply+" THEN 'apply_remote' ELSE "+b.notAppliedOverRepair()+" END", "d.n", "d.ts", "FROM pgjet_d d WHERE NOT ("+apply+" AND "+blocked+")"),
		// A row inserted here after this statement's snapshot: the
		// insert did nothing.
		b.rec.record("insert_exists", key, "NULL", remote, b.notApplied(), "NULL", "NULL",
			"WHERE NOT EXISTS (SELECT 1 FROM pgjet_l) AND NOT "+blocked+" AND NOT EXISTS (SELECT 1 FROM pgjet_ins)"),
	}
	if len(uv) > 0 {
		write := "(NOT EXISTS (SELECT 1 FROM pgjet_l) OR EXISTS (SELECT 1 FROM pgjet_d d WHERE " + apply + "))"
		records = append(records, b.rec.record("unique_violation", key, "uv.j", remote, b.uvDecision(), "NULL", "NULL", "FROM pgjet_uv uv WHERE "+write))
	}
	return b.finish(records...)
}

// change builds the statement of an update or a delete.
func (b *policySQL) change(ch *stream.Change) string {
	p := b.p
	// New values first (update), then what finds the row.
	var set []int
	if ch.Op == stream.OpUpdate {
		set = sentColumns(ch.New)
	}
	vals := p.params(&b.sb, set)
	f := p.finder(&b.sb, ch)
	b.commitParams()
	find := f.on(f.alias())
	// where finds the row to change in the write: by key, or by the
	// row pgjet_l locked; self is that row over alias u.
	where, self := find, "NOT ("+f.on("u")+")"
	if p.fullMatch {
		where = "t.ctid = (SELECT c FROM pgjet_l)"
		self = "u.ctid NOT IN (SELECT c FROM pgjet_l)"
	}
	b.lockLocal(f.alias(), find, p.fullMatch)
	kind := "update_missing"
	if ch.Op == stream.OpDelete {
		kind = "delete_missing"
	}
	missing := b.rec.record(kind, f.key(), "NULL", p.jsonOf(set, vals), b.missingDecision(f), "NULL", "NULL", "WHERE NOT EXISTS (SELECT 1 FROM pgjet_l)")
	if ch.Op == stream.OpDelete {
		apply := "NOT d.changed"
		if p.policy == PolicyLastWriterWins {
			apply = "true" // a delete wins: no tombstone could tell a newer update it happened
		}
		b.w.add("pgjet_del", "DELETE FROM "+p.t.qname+" t WHERE "+where+" AND EXISTS (SELECT 1 FROM pgjet_d d WHERE "+apply+") RETURNING 1")
		return b.finish(missing, b.rec.record("delete_changed", f.key(), "d.j", "NULL", b.decide(apply), "d.n", "d.ts", "FROM pgjet_d d WHERE d.changed"))
	}
	return b.update(ch, set, vals, f.key(), where, self, missing)
}

// update finishes the statement of an update: set are the columns it
// sends (vals their parameters), key the record key of the row found by
// where, self that row over alias u, and missing the record of a
// missing row.
func (b *policySQL) update(ch *stream.Change, set []int, vals []string, key, where, self, missing string) string {
	p := b.p
	// moved is an update that gives its row another key under
	// last-writer-wins. It applies as a delete of the old key and an
	// insert of the new row: the delete wins over a concurrent change
	// of the old row (as a delete does), and the new row is inserted,
	// or replaces a row holding its key when newer, whether or not the
	// old row is still here (deleted, or given another key
	// concurrently). A region that skipped it would keep a key the
	// other region no longer has, and the two would stay apart.
	moved := p.policy == PolicyLastWriterWins && p.keyChange(ch)
	apply := "NOT d.changed"
	switch {
	case moved:
		apply = "true"
	case p.policy == PolicyLastWriterWins:
		apply = b.lwwApply()
	}
	// whole: the new row can be inserted (no unchanged TOAST value).
	whole := moved && len(set) == len(p.rel.Columns)
	uv := p.uvIndexes(ch)
	blocked := "false"
	if len(uv) > 0 {
		if whole {
			// The row holding the new key is decided by
			// last-writer-wins below, not a violation.
			self += " AND NOT (" + p.match("u", p.keys, vals) + ")"
		}
		blocked = b.checkUnique(uv, vals, self)
	}
	sets := p.updateSets(set, vals)
	// Under moved, pgjet_n is the row holding the new key, pgjet_nd
	// its writer. With such a row, the old one is deleted (pgjet_ldel)
	// and the row there keeps the newer version (pgjet_nupd); without
	// one, the old row moves (pgjet_upd), or the new one is inserted
	// when the old one is gone (pgjet_ins).
	free := "true"
	newerHere := b.lwwApply()
	gone := "NOT EXISTS (SELECT 1 FROM pgjet_l)"
	if whole {
		b.w.add("pgjet_n", "SELECT to_jsonb(n) AS j, n.xmin AS x FROM "+p.t.qname+" n WHERE "+p.match("n", p.keys, vals)+" FOR UPDATE OF n")
		b.addWriter("pgjet_nd", "pgjet_n", "n")
		free = "NOT EXISTS (SELECT 1 FROM pgjet_n)"
	}
	b.w.add("pgjet_upd", "UPDATE "+p.t.qname+" t SET "+sets+" WHERE "+where+
		" AND EXISTS (SELECT 1 FROM pgjet_d d WHERE "+apply+") AND NOT "+blocked+" AND "+free+" RETURNING 1")
	remote := p.jsonOf(set, vals)
	records := []string{missing,
		b.rec.record("update_changed", key, "d.j", remote, b.decide(apply), "d.n", "d.ts", "FROM pgjet_d d WHERE d.changed AND NOT ("+apply+" AND "+blocked+")"),
	}
	writes := "EXISTS (SELECT 1 FROM pgjet_d d WHERE " + apply + ")"
	if whole {
		b.w.add("pgjet_ldel", "DELETE FROM "+p.t.qname+" t WHERE "+where+" AND EXISTS (SELECT 1 FROM pgjet_n) AND NOT "+blocked+" RETURNING 1")
		b.w.add("pgjet_ins", p.insertInto(set)+" SELECT "+commas(pick(set, vals))+
			" WHERE "+gone+" AND "+free+" AND NOT "+blocked+" ON CONFLICT ("+commas(p.colNames(p.keys))+") DO NOTHING RETURNING 1")
		b.w.add("pgjet_nupd", "UPDATE "+p.t.qname+" t SET "+sets+" WHERE "+p.match("t", p.keys, vals)+
			" AND EXISTS (SELECT 1 FROM pgjet_nd d WHERE "+newerHere+") AND NOT "+blocked+" RETURNING 1")
		records[0] = b.rec.record("update_missing", key, "NULL", remote, b.decide("EXISTS (SELECT 1 FROM pgjet_ins)"), "NULL", "NULL", "WHERE "+gone+" AND "+free)
		records = append(records, b.rec.record("insert_exists", p.jsonOf(p.keys, vals), "d.j", remote, b.decide(newerHere+" AND NOT "+blocked), "d.n", "d.ts", "FROM pgjet_nd d"))
		writes = "(" + writes + " OR " + gone + " AND NOT EXISTS (SELECT 1 FROM pgjet_nd d WHERE NOT " + newerHere + "))"
	}
	if len(uv) > 0 {
		records = append(records, b.rec.record("unique_violation", key, "uv.j", remote, b.uvDecision(), "NULL", "NULL", "FROM pgjet_uv uv WHERE "+writes))
	}
	return b.finish(records...)
}

// keyChange reports whether an update gives its row another key.
func (p *plan) keyChange(ch *stream.Change) bool {
	if ch.Op != stream.OpUpdate || ch.Old == nil || p.fullMatch || !p.upsert {
		return false
	}
	for _, k := range p.keys {
		o, n := ch.Old[k], ch.New[k]
		if n.Kind == stream.ValueUnchanged {
			return false
		}
		if o.Kind != n.Kind || !bytes.Equal(o.Data, n.Data) {
			return true
		}
	}
	return false
}

// timestamptzOID is the type of source commit times in statements.
const timestamptzOID = 1184

// uvIndexes lists the unique indexes (as source column indexes) a change
// could violate besides finding its own row by key: for an insert every
// unique index but the key's, for an update every one whose columns the
// update sets (the key's only when the key changes). Indexes with a column
// the source does not send, or an unchanged TOASTed one, are left out: a
// violation of those fails the statement.
func (p *plan) uvIndexes(ch *stream.Change) [][]int {
	if p.policy == PolicySourceWins {
		return nil
	}
	idx := map[string]int{}
	for i, c := range p.rel.Columns {
		idx[c.Name] = i
	}
	var keyNames []string
	for _, k := range p.keys {
		keyNames = append(keyNames, p.rel.Columns[k].Name)
	}
	var out [][]int
	for _, u := range p.t.uniques {
		isKey := len(keyNames) > 0 && sameSet(u, keyNames)
		if isKey && (ch.Op == stream.OpInsert || ch.Old == nil) {
			continue
		}
		var cols []int
		for _, name := range u {
			i, ok := idx[name]
			if !ok || ch.New[i].Kind == stream.ValueUnchanged {
				cols = nil
				break
			}
			cols = append(cols, i)
		}
		if cols != nil {
			out = append(out, cols)
		}
	}
	return out
}

// nullsNotDistinct reports whether the unique index over these source
// columns treats NULLs as equal (PostgreSQL 15's NULLS NOT DISTINCT).
func (p *plan) nullsNotDistinct(cols []int) bool {
	var names []string
	for _, c := range cols {
		names = append(names, p.rel.Columns[c].Name)
	}
	for i, u := range p.t.uniques {
		if i < len(p.t.nullsEqual) && p.t.nullsEqual[i] && sameSet(u, names) {
			return true
		}
	}
	return false
}

// stops reports whether a statement for ch can decide 'error', which
// stops the applier: its group must not commit before its result is read.
func (p *plan) stops(ch *stream.Change) bool {
	switch p.policy {
	case PolicyError:
		return true
	case PolicyLastWriterWins:
		return ch.Op != stream.OpDelete && len(p.uvIndexes(ch)) > 0
	}
	return false
}

// insertLogs reports whether the insert statement of this plan records
// conflicts (and so takes the commit LSN and time as parameters).
func (p *plan) insertLogs(ch *stream.Change) bool {
	return p.upsert || (p.policy != PolicySourceWins && len(p.uvIndexes(ch)) > 0)
}
