// Package datadir creates and opens iamdb's data directory: the one place
// that knows which file is which.
//
//	DIR/master.key     32 random bytes, mode 0600: seals secrets at rest
//	DIR/iamdb.db       the embedded SQLite identity store (unless a shared
//	                   PostgreSQL store is configured)
//	DIR/iamdb.json     metadata: default account id, partition
//	DIR/ca.pem, ca.key, ca-bundle.pem, server.pem, server.key   (package pki)
//
// Init is all or nothing: when any step fails, everything it created is
// removed again, so a second `iamdb init` can simply be run. It refuses to
// touch a directory that already holds a master key, because replacing the
// key would make every stored secret unreadable.
package datadir
