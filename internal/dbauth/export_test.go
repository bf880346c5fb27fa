package dbauth

// StoredPasswordTTL lets the external tests move their clock past the
// password cache's lifetime.
const StoredPasswordTTL = storedPasswordTTL
