package bridge

import "github.com/jackc/pgx/v5/pgconn"

func pgErr(code string) error { return &pgconn.PgError{Code: code, Message: "test"} }
