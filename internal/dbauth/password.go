package dbauth

import (
	"context"
	"fmt"
)

// managedFunc is an engine's mode managed: the password it set itself for
// dbUser, set or rotated first when needed.
type managedFunc func(ctx context.Context, st *state, dbUser string) (string, error)

// backendPassword is Password of either engine: "" in mode trust, the
// operator's in mode secrets, the engine's managed one in mode managed.
func backendPassword(ctx context.Context, st *state, dbUser string, managed managedFunc) (string, error) {
	switch st.in.BackendAuth.Mode {
	case "trust":
		return "", nil
	case "secrets":
		pw, ok := st.secrets[dbUser]
		if !ok {
			return "", fmt.Errorf("instance %s: no password for database user %q in %s: add '%s: PASSWORD' to it and reload iamdb (SIGHUP)",
				st.in.Name, dbUser, st.in.BackendAuth.SecretsFile, dbUser)
		}
		return pw, nil
	case "managed":
		return managed(ctx, st, dbUser)
	}
	return "", fmt.Errorf("instance %s: backend_auth.mode %q: use managed, secrets or trust", st.in.Name, st.in.BackendAuth.Mode)
}

// refusedPassword is Refused of either engine, called when the upstream
// refused password, which Password gave for dbUser. In mode managed it
// drops the password cached for dbUser and asks for it again, so a
// password another replica or 'iamdb db rotate' set within
// storedPasswordTTL is seen at once; it returns that password and whether
// it differs from the refused one, that is whether logging in once more
// with it may succeed. In modes secrets and trust the password cannot have
// changed behind iamdb's back: it returns false.
func refusedPassword(ctx context.Context, st *state, cache *passwordCache, dbUser, password string, managed managedFunc) (string, bool, error) {
	if st.in.BackendAuth.Mode != "managed" {
		return "", false, nil
	}
	cache.forget(dbUser)
	pw, err := managed(ctx, st, dbUser)
	if err != nil {
		return "", false, err
	}
	return pw, pw != password, nil
}
