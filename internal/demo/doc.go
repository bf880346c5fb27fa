// Package demo is `iamdb demo`: a walkthrough of the whole product on
// throwaway local databases, narrated step by step with the commands a
// person would type.
//
// Everything the demo runs is the real thing: PostgreSQL and MariaDB
// started from the machine's binaries by internal/testdb (a private temp
// directory, free loopback ports; a database the machine already runs is
// never touched), this very iamdb binary for every iamdb command (init,
// apply, db setup, serve, access-key, token, token verify, audit), the AWS
// CLI for tokens and STS, and the psql and mariadb clients for logins.
//
// The sequence:
//
//	 1  start PostgreSQL and MariaDB          testdb.StartPostgres / StartMariaDB
//	 2  write iamdb.yaml (two instances)
//	 3  iamdb init                            data dir, CA, account, admin key
//	 4  iamdb apply -f identities.yaml        user alice, role analysts, policies, IdP
//	 5  iamdb db setup; CREATE USER …         rds_iam, database users (psql, mariadb)
//	 6  iamdb serve &                         listeners, STS API, /readyz
//	 7  iamdb access-key create --user alice  saved as AWS profile alice
//	 8  aws rds generate-db-auth-token | psql          alice as herself
//	 9  iamdb token | mariadb                          alice as herself
//	10  IdP ID token → aws sts assume-role-with-web-identity → iamdb token | psql
//	                                                   carol as the shared user app
//	11  iamdb token verify on a token alice may not use, and the refused login
//	12  iamdb audit query / verify
//	13  clean up (or, with --keep, wait for Ctrl-C and then clean up)
//
// The demo plays the identity provider of step 10 itself (demoIdP): an
// ECDSA key whose public half is written as a JWKS file the OIDC provider
// of identities.yaml points at.
//
// Secrets never reach the screen: tokens are passed to clients in
// environment variables (PGPASSWORD, MYSQL_PWD), shown as "$(…)", and every
// line of output is passed through redact, which hides secret access keys
// and session tokens. The shell environment of the commands is written to
// env.sh in the working directory, so that after `iamdb demo --keep` a
// person can run the same commands in another terminal.
//
// Cleanup runs on success, on error and on Ctrl-C (SIGINT, SIGTERM): iamdb
// serve is stopped with SIGTERM, the databases are stopped and their
// directories removed, and the working directory is removed. Should the
// demo itself be killed, its children die with it (parent-death signal) and
// the next run removes working directories whose owner is gone.
package demo
