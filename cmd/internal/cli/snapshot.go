package cli

import (
	"github.com/spf13/pflag"

	"github.com/pgjet/pgjet/capture"
)

// CaptureTableFlags adds the flags that say which tables and columns a
// capture (and so a snapshot of it) holds; pgjet snapshot takes the
// capture's.
func CaptureTableFlags(fs *pflag.FlagSet, cfg *capture.Config) {
	fs.StringSliceVar(&cfg.IncludeTables, "include-tables", nil, "capture only tables matching these schema.table glob patterns (public.orders_*,...); default all")
	fs.StringSliceVar(&cfg.ExcludeTables, "exclude-tables", nil, "drop the changes and schema changes of tables matching these schema.table patterns; wins over --include-tables")
	fs.StringSliceVar(&cfg.ExcludeColumns, "exclude-columns", nil, "remove columns matching these schema.table.column patterns from the stream (e.g. *.*.ssn); not key columns")
}

// SnapshotFlags adds the flags of how snapshots are taken and kept.
func SnapshotFlags(fs *pflag.FlagSet, cfg *capture.Config) {
	fs.IntVar(&cfg.SnapshotKeep, "snapshot-keep", cfg.SnapshotKeep, "complete snapshots kept in the snapshot stream (0 = all)")
	fs.IntVar(&cfg.SnapshotWorkers, "snapshot-workers", cfg.SnapshotWorkers, "connections copying tables at once during a snapshot")
	fs.Int64Var(&cfg.SnapshotRangeBytes, "snapshot-range-bytes", cfg.SnapshotRangeBytes, "tables larger than this are copied in parallel block ranges")
	fs.StringVar(&cfg.PgDump, "pg-dump", cfg.PgDump, "pg_dump program that copies the schema into snapshots")
	fs.StringVar(&cfg.StreamRetention, "stream-retention", cfg.StreamRetention, "what bounds the change stream: age (--stream-max-age) or snapshots (changes older than the oldest kept snapshot are removed after each snapshot; no age limit)")
}
