package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestVerifyPerfTmp(t *testing.T) {
	c := newCluster(t, "CREATE TABLE big (id bigint PRIMARY KEY, a text, b numeric, c timestamptz)")
	for _, u := range []string{c.src, c.dst} {
		exec1(t, u, `INSERT INTO big SELECT g, md5(g::text), g*1.1, '2024-01-01' FROM generate_series(1, 1000000) g`, "VACUUM ANALYZE")
	}
	ctx := context.Background()
	conn, _ := pgx.Connect(ctx, c.src)
	for _, q := range []string{
		`EXPLAIN ANALYZE SELECT count(*), coalesce(sum(('x' || substr(h, 1, 16))::bit(64)::bigint), 0)::text, coalesce(sum(('x' || substr(h, 17, 16))::bit(64)::bigint), 0)::text FROM (SELECT md5(ROW(t."id", t."a", t."b", t."c")::text) AS h FROM "public"."big" t WHERE t."id" > $1::text::bigint AND t."id" <= $2::text::bigint) s`,
		`EXPLAIN ANALYZE SELECT count(*) FROM (SELECT md5(ROW(t."id", t."a", t."b", t."c")::text) AS h FROM "public"."big" t WHERE t."id" > $1::text::bigint AND t."id" <= $2::text::bigint) s`,
		`EXPLAIN ANALYZE SELECT count(*) FROM (SELECT ROW(t."id", t."a", t."b", t."c")::text AS h FROM "public"."big" t WHERE t."id" > $1::text::bigint AND t."id" <= $2::text::bigint) s`,
		`EXPLAIN ANALYZE SELECT t."id"::text FROM "public"."big" t WHERE t."id" > $1::text::bigint ORDER BY t."id" OFFSET $2::bigint - 1 LIMIT 1`,
	} {
		args := []any{"500000", "600000"}
		if strings.Contains(q, "OFFSET") {
			args = []any{"500000", int64(100000)}
		}
		rows, err := conn.Query(ctx, q, args...)
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		for rows.Next() {
			var s string
			rows.Scan(&s)
			lines = append(lines, s)
		}
		t.Logf("%s\n%s", q, strings.Join(lines, "\n"))
	}
	t0 := time.Now()
	code, out, errOut := runPgjetVerify(t, "--source", c.src, "--target", c.dst)
	t.Logf("exit %d in %s\n%s\n%s", code, time.Since(t0), out, errOut)
}
