// Package dbauth decides how iamdb logs in to an upstream database as the
// database user named in an IAM token, and which users are IAM-enabled
// (spec: proxy.md, "Backend authentication" and "Users that are not
// IAM-enabled").
//
// The backend session must run as exactly that user, so grants, row-level
// security, current_user and the database's own logs stay right; a shared
// login plus SET ROLE would let the client RESET ROLE out of it. So iamdb
// needs each IAM user's own credentials, by backend_auth.mode:
//
//	trust    the upstream trusts iamdb's address; Password returns "".
//	secrets  the operator's YAML file maps user to password (mode 0600,
//	         read at start and on Reload, i.e. SIGHUP).
//	managed  iamdb gives each IAM user a random 64-character password that
//	         nobody else ever sees, stores it sealed under the master key
//	         (additional data "backend/INSTANCE/USER"), and replaces it once
//	         it is older than rotate_every, at the next login.
//
// # Managed passwords
//
//	login (pgproxy)        Postgres                 store          upstream (admin conn)
//	  | Password(u) ---------->|                        |                  |
//	  |                        |-- Get(instance,u) ---->|                  |
//	  |                        |<- sealed, rotatedAt ---|                  |
//	  |<---- fresh: password --|                        |                  |
//	  |          missing/old:  |-- per-user mutex, re-read                 |
//	  |                        |-- IsIAMUser(u)? else refuse ------------->|
//	  |                        |-- BEGIN; pg_advisory_xact_lock(u) ------->|
//	  |                        |-- re-read (another replica?) ->|          |
//	  |                        |-- ALTER ROLE u PASSWORD 'SCRAM-SHA-256$…'>|
//	  |                        |-- Put(sealed, now) --->|                  |
//	  |                        |-- COMMIT ------------------------------->|
//	  |<------- new password --|                        |                  |
//	  | pgconn.Connect as u with it (SCRAM) ---------------------------->  |
//
// ALTER ROLE carries the SCRAM-SHA-256 verifier computed here, never the
// password, so the password cannot reach the server's statement log,
// pg_stat_activity or an error message; errors are scrubbed of the
// verifier too. Because ALTER ROLE is transactional, a failed store write
// rolls the password change back, and the advisory lock makes concurrent
// first logins on several replicas agree on one password. iamdb only ever
// takes over the password of an IAM-enabled user, and never the admin
// user's: rotating it would lock iamdb out.
//
// Each Postgres and MySQL value keeps the opened passwords in memory for
// storedPasswordTTL (one second) after reading them, so a burst of logins
// reads and unseals the store once per user and second (passwordCache).
// Passwords it sets itself are used at once, Reload and Close drop them
// all, and one another replica or 'iamdb db rotate' sets is seen within
// storedPasswordTTL, or at once by Refused, which the proxies call when
// the upstream refuses a password, and which drops the cached one.
//
// # IAM-enabled users
//
// When the instance lists iam_users (names or patterns), they decide.
// Otherwise, as on RDS, membership in role rds_iam does (GRANT rds_iam TO
// app), looked up over the admin connection and cached per user for
// MembershipTTL, both ways. The lookup walks pg_auth_members rather than
// calling pg_has_role, which fails for unknown users and treats superusers
// as members of every role. A missing rds_iam role is an error that says to
// run 'iamdb db setup', which creates it (Setup).
//
// # MySQL and MariaDB (MySQL)
//
// MySQL has no rds_iam role: iam_users (required for engine mysql) alone
// says who is IAM-enabled, and only mode managed needs an admin connection
// (database/sql with go-sql-driver/mysql, TLS by UpstreamTLS, the admin
// password set per connection). A MySQL account is user@host, so a managed
// password goes to every row of mysql.user with that user name:
//
//	Password(u) ─ fresh stored one? ─▶ return it
//	  └ per-user mutex ─ GET_LOCK('iamdb-backend-password-<hash>') on one
//	    admin connection (replicas) ─ re-read store ─ SELECT Host, plugin,
//	    authentication_string FROM mysql.user WHERE User = u
//	    ─ ALTER USER 'u'@'h' IDENTIFIED BY PASSWORD '*<sha1(sha1(pw))>' for
//	      every h (MariaDB: mysql_native_password, and only the hash crosses
//	      the wire; MySQL: IDENTIFIED WITH caching_sha2_password BY, which
//	      MySQL rewrites out of its logs) ─ Put(sealed) ─ RELEASE_LOCK
//
// ALTER USER is not transactional: when storing the new password fails,
// the previous plugin and authentication string are written back (IDENTIFIED
// WITH plugin AS '…') where they can be, so store and database agree. Server
// errors, which may quote the statement, are scrubbed of the password and
// its hash.
//
// # Admin connection
//
// For PostgreSQL, a pgxpool of at most four connections to database postgres as
// backend_auth.admin_user, with the password from admin_password_env or
// admin_password_file (trimmed; the file must be private to its owner),
// over the upstream TLS of UpstreamTLS. The password is set per new
// connection from the current state, so Reload can change it without
// dropping anything.
package dbauth
