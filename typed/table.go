package typed

// Table is a typed table as the rules declare it: what firehose migrate
// creates and the bridge checks at start.
type Table struct {
	Name string
	// Rule names the rule that declares the table, for errors.
	Rule string
	// Columns in table order.
	Columns []Column
	// TimeColumn is the column the table is range-partitioned by (NOT
	// NULL), a timestamptz column of Columns.
	TimeColumn string
	// Indexes the rule asks for. PostgreSQL requires a unique index of a
	// partitioned table to hold the partition key: one that does not gets
	// TimeColumn added.
	Indexes []Index
}

// Index is an index of a typed table.
type Index struct {
	Columns []string
	Unique  bool
}
