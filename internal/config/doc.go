// Package config defines iamdb's configuration file, loads it strictly and
// validates it.
//
// The file is YAML (product.md lists the stable key names). Loading is
// strict: an unknown key, a value of the wrong type or an invalid value is an
// error that names the key and its line, so a typo never silently turns a
// setting off. Defaults are applied after decoding, then Validate checks
// everything at once and reports every problem, not just the first.
//
// Secrets never live in this file: backend admin passwords come from an
// environment variable or a file named here.
package config
