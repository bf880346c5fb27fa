// Package interop holds the interoperability matrix: every token generator
// an application might use against every database client it might log in
// with, through the real listeners of `iamdb serve`.
//
// The package has no code of its own; its test (interop_test.go) is the
// matrix. It builds the iamdb binary, starts a throwaway PostgreSQL and
// MariaDB (internal/testdb), runs `iamdb init`, `iamdb apply` and
// `iamdb serve` in front of them, and then, for each pair, generates a
// token and logs in with it:
//
//	generators                          clients
//	aws-sdk-go-v2 feature/rds/auth      PostgreSQL: psql, pgx, database/sql + pgx stdlib
//	aws rds generate-db-auth-token      MariaDB:    mariadb, go-sql-driver/mysql,
//	iamdb token                                     go-mysql client
//	@aws-sdk/rds-signer (Node.js)
//
// Each cell is a subtest that must log in as the token's database user and
// read it back with current_user. The matrix is printed as a Markdown table
// (t.Log, and to the file named by IAMDB_INTEROP_MATRIX when set; `make
// interop` does both); the README shows the latest one.
//
// Generators and clients are real programs and libraries: a missing one
// skips its cells outside CI and fails them in CI (CI=true). The Node.js
// generator lives in testdata/node (package.json and package-lock.json
// pin @aws-sdk/rds-signer; scripts/deps.sh runs npm ci there).
package interop
