// Package proxy holds what iamdb's database listeners share whatever the
// wire protocol: the decisions they delegate (Authenticator, Backend), the
// upstream they relay to (Upstream), the events they report (Observer) and
// the names of login results.
//
// Each engine has its own package that speaks its protocol:
//
//	internal/proxy/pgproxy     PostgreSQL
//	internal/proxy/mysqlproxy  MySQL and MariaDB
//
// Both follow one login flow (spec: proxy.md): accept under a handshake
// deadline; require TLS for IAM-enabled users before any password is asked;
// ask for the token as a cleartext password; Authenticator.Authenticate
// (token, rds-db:connect); log in to the upstream as the same database user
// with Backend.Password; relay bytes until either side closes. Refusals use
// the engine's ordinary authentication error; the reason goes to the log
// and the Observer, never to the client.
package proxy
