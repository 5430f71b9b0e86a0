package stream

// Key repairs after a failover. A region that applied transactions of the
// old generation which never reached the new primary (it was ahead of the
// promoted region) knows, from the old stream, which rows they touched. It
// asks the new primary's capture (RepairSubject) to read those rows again;
// capture reads them in a transaction that writes them into the WAL as a
// transactional logical message (PrefixRepair), so they reach every region
// through the stream in commit order with every other change of those
// rows, and each region makes its rows of those keys the primary's.

// PrefixRepair is the logical-message prefix of rows capture read again at
// a region's request; the content is a RepairRequest with Columns and Rows
// filled in.
const PrefixRepair = "pgjet.repair"

// RepairSubject is where a region asks source's capture for a repair: a
// request (core NATS) outside the stream's subjects, which must not store
// it.
func RepairSubject(source string) string { return "pgjetrepair." + source }

// RepairRequest asks for the rows of some keys. In the logical message
// that answers it, every table also has Columns and Rows: a key of Keys
// without a row in Rows is absent on the primary.
type RepairRequest struct {
	// Region asks; Generation is the generation it follows.
	Region     string        `json:"region"`
	Generation int           `json:"generation"`
	Tables     []RepairTable `json:"tables"`
}

// RepairTable is the keys of one table to repair.
type RepairTable struct {
	Schema string `json:"schema"`
	Name   string `json:"name"`
	// KeyColumns name the columns of each key in Keys; a table of
	// REPLICA IDENTITY FULL names all its columns (its rows are found by
	// their whole image, FullImage, compared in their text output: some
	// types have no equality).
	KeyColumns []string `json:"key_columns"`
	FullImage  bool     `json:"full_image,omitempty"`
	// Keys are the values of KeyColumns, in Postgres' text form (nil is
	// NULL).
	Keys [][]*string `json:"keys"`
	// Columns are the table's columns on the primary (generated ones
	// left out), and Rows its rows of those keys, in that order.
	Columns []string    `json:"columns,omitempty"`
	Rows    [][]*string `json:"rows,omitempty"`
}

// RepairReply answers a RepairRequest: the LSN of the message holding the
// rows, or why there is none.
type RepairReply struct {
	LSN   LSN    `json:"lsn,omitempty"`
	Error string `json:"error,omitempty"`
}
