package dbauth

import (
	"fmt"
	"os"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/iamdb/iamdb/internal/config"
)

// readPrivateFile reads a file holding secrets after checking that only its
// owner may read or write it: a password readable by other local users is
// a password given away.
func readPrivateFile(path, key string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: %s is not a regular file", key, path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s: %s has mode %04o, so other users may read it; it must be private to its owner: run chmod 600 %s", key, path, perm, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	return b, nil
}

var yamlLine = regexp.MustCompile(`line \d+`)

// loadSecretsFile reads a YAML map of database user to password. It walks
// the YAML nodes itself instead of decoding into a map so that no error
// message can quote a value: yaml's type errors print the offending scalar,
// which here would be a password.
func loadSecretsFile(path string) (map[string]string, error) {
	const key = "backend_auth.secrets_file"
	b, err := readPrivateFile(path, key)
	if err != nil {
		return nil, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		where := yamlLine.FindString(err.Error())
		if where == "" {
			where = "somewhere"
		}
		return nil, fmt.Errorf("%s: %s is not valid YAML (%s): write one 'user: password' per line", key, path, where)
	}
	out := map[string]string{}
	if len(doc.Content) == 0 {
		return out, nil
	}
	m := doc.Content[0]
	if m.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s: %s line %d: expected a map of database user to password ('app: password')", key, path, m.Line)
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.Value == "" {
			return nil, fmt.Errorf("%s: %s line %d: expected a database user name as the key", key, path, k.Line)
		}
		if v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
			return nil, fmt.Errorf("%s: %s line %d: the password of %q must be a plain string", key, path, v.Line, k.Value)
		}
		if _, dup := out[k.Value]; dup {
			return nil, fmt.Errorf("%s: %s line %d: database user %q is listed twice", key, path, k.Line, k.Value)
		}
		out[k.Value] = v.Value
	}
	return out, nil
}

// adminPassword returns the admin user's password from the environment
// variable or file named in backend_auth; "" when neither is configured
// (the upstream trusts the admin, or libpq's PGPASSWORD/.pgpass apply).
func adminPassword(ba config.BackendAuth, getenv func(string) (string, bool)) (string, error) {
	switch {
	case ba.AdminPasswordEnv != "":
		v, ok := getenv(ba.AdminPasswordEnv)
		if !ok {
			return "", fmt.Errorf("backend_auth.admin_password_env: environment variable %s is not set: export it with the password of admin user %s", ba.AdminPasswordEnv, ba.AdminUser)
		}
		return v, nil
	case ba.AdminPasswordFile != "":
		b, err := readPrivateFile(ba.AdminPasswordFile, "backend_auth.admin_password_file")
		if err != nil {
			return "", err
		}
		return strings.TrimSpace(string(b)), nil
	}
	return "", nil
}

// credentialHint says where the admin password comes from, for messages
// that tell the operator what to check.
func credentialHint(ba config.BackendAuth) string {
	switch {
	case ba.AdminPasswordEnv != "":
		return "check backend_auth.admin_user and " + ba.AdminPasswordEnv
	case ba.AdminPasswordFile != "":
		return "check backend_auth.admin_user and " + ba.AdminPasswordFile
	}
	return "check backend_auth.admin_user, and set admin_password_env or admin_password_file"
}
