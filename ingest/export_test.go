package ingest

// CheckJSON exposes checkJSON to the tests of package ingest_test.
var CheckJSON = checkJSON
