// Command iamdb runs IAM database authentication for PostgreSQL, MySQL and
// MariaDB. All behaviour lives in internal/cli; this file only hands over the
// process arguments and turns the result into an exit code.
package main

import (
	"os"

	"github.com/iamdb/iamdb/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
