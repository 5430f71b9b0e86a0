package capture

import "strings"

// appliedOriginPrefix begins the name of the replication origin every
// pgjet-apply writes under (pgjet_<source>, apply.OriginName; capture and
// apply do not import each other).
const appliedOriginPrefix = "pgjet_"

// skipOrigin reports whether a transaction written under the replication
// origin named origin must be left out of the stream: it was written by a
// pgjet applier, so it came from another region's stream already, and
// publishing it again would send it back there (a loop). Its position is
// still confirmed. Local writes have no origin ("").
//
// Wired in reader.message, on *pglogrepl.OriginMessage (sent right after
// Begin for a transaction written under an origin).
func skipOrigin(origin string) bool {
	return strings.HasPrefix(origin, appliedOriginPrefix)
}
