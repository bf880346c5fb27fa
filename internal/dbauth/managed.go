package dbauth

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/iamdb/iamdb/internal/identity"
)

// PasswordLength is the length of the passwords iamdb gives database users
// in mode managed: 64 letters and digits, about 381 bits.
const PasswordLength = 64

const passwordAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// scramIterations matches PostgreSQL's default scram_iterations.
const scramIterations = 4096

// newPassword returns PasswordLength random letters and digits. Bytes at or
// above the largest multiple of the alphabet size are dropped so every
// character is equally likely.
func newPassword(r io.Reader) (string, error) {
	const limit = 256 - 256%len(passwordAlphabet)
	out := make([]byte, 0, PasswordLength)
	buf := make([]byte, PasswordLength)
	for len(out) < PasswordLength {
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", fmt.Errorf("generate password: %w", err)
		}
		for _, b := range buf {
			if int(b) < limit && len(out) < PasswordLength {
				out = append(out, passwordAlphabet[int(b)%len(passwordAlphabet)])
			}
		}
	}
	return string(out), nil
}

// scramVerifier computes the SCRAM-SHA-256 verifier PostgreSQL stores for
// password (RFC 5802/7677, as libpq's PQencryptPasswordConn does). iamdb
// sends the verifier, never the password, in ALTER ROLE, so the password
// cannot reach the server's statement log or pg_stat_activity. The
// password is ASCII letters and digits, which SASLprep leaves unchanged.
func scramVerifier(password string, salt []byte) (string, error) {
	salted, err := pbkdf2.Key(sha256.New, password, salt, scramIterations, sha256.Size)
	if err != nil {
		return "", fmt.Errorf("derive SCRAM key: %w", err)
	}
	mac := func(key []byte, msg string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	clientKey := mac(salted, "Client Key")
	storedKey := sha256.Sum256(clientKey)
	serverKey := mac(salted, "Server Key")
	b64 := base64.StdEncoding.EncodeToString
	return "SCRAM-SHA-256$" + strconv.Itoa(scramIterations) + ":" + b64(salt) + "$" + b64(storedKey[:]) + ":" + b64(serverKey), nil
}

// sealAAD binds a sealed password to its instance and user, so a value
// copied onto another row does not open.
func sealAAD(instance, dbUser string) []byte {
	return []byte("backend/" + instance + "/" + dbUser)
}

// rotationLockKey names the advisory lock that serializes password changes
// of one role across every iamdb replica sharing the upstream.
func rotationLockKey(dbUser string) int64 {
	sum := sha256.Sum256([]byte("iamdb/backend-password/" + dbUser))
	return int64(binary.BigEndian.Uint64(sum[:8]))
}

func (p *Postgres) managedPassword(ctx context.Context, st *state, dbUser string) (string, error) {
	if err := p.checkManagedUser(st, dbUser); err != nil {
		return "", err
	}
	// Fastest path: the password read from the store or set here within
	// storedPasswordTTL.
	if pw, ok := p.pwCache.get(dbUser, p.now(), st.in.BackendAuth.RotateEvery.D()); ok {
		return pw, nil
	}
	// Fast path, no lock: a fresh stored password.
	if pw, ok, err := p.storedPassword(ctx, st, dbUser); err != nil || ok {
		return pw, err
	}
	unlock, err := p.locks.lock(ctx, dbUser)
	if err != nil {
		return "", fmt.Errorf("instance %s: %w", st.in.Name, err)
	}
	defer unlock()
	// Another login of the same user may have set it while we waited.
	if pw, ok, err := p.storedPassword(ctx, st, dbUser); err != nil || ok {
		return pw, err
	}
	if err := p.checkIAMUser(ctx, st, dbUser); err != nil {
		return "", err
	}
	return p.setPassword(ctx, dbUser, false)
}

// checkIAMUser refuses to take over the password of a user that is not
// IAM-enabled: whoever logs in with it today would be locked out.
func (p *Postgres) checkIAMUser(ctx context.Context, st *state, dbUser string) error {
	iam, err := p.IsIAMUser(ctx, dbUser)
	if err != nil {
		return err
	}
	if !iam {
		return fmt.Errorf("instance %s: %w: database user %q is not IAM-enabled (%s), so iamdb leaves its password alone",
			st.in.Name, ErrNotIAMUser, dbUser, iamRule(st))
	}
	return nil
}

func iamRule(st *state) string {
	if len(st.in.IAMUsers) > 0 {
		return "not in iam_users"
	}
	return "not a member of " + IAMRole
}

func (p *Postgres) checkManagedUser(st *state, dbUser string) error {
	if dbUser == "" {
		return fmt.Errorf("instance %s: empty database user name", st.in.Name)
	}
	if dbUser == st.in.BackendAuth.AdminUser {
		// Rotating it would lock iamdb's own admin connection out.
		return fmt.Errorf("instance %s: database user %q is iamdb's admin user (backend_auth.admin_user), whose password iamdb does not manage: revoke %s from it, or use another admin user",
			st.in.Name, dbUser, IAMRole)
	}
	return nil
}

// storedPassword returns the stored password of dbUser when there is one
// that opens and is younger than rotate_every, and puts it in the password
// cache.
func (p *Postgres) storedPassword(ctx context.Context, st *state, dbUser string) (string, bool, error) {
	gen, readAt := p.pwCache.generation(), p.now()
	sealed, rotatedAt, err := p.store.GetBackendPassword(ctx, st.in.Name, dbUser)
	if errors.Is(err, identity.ErrNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("instance %s: %w", st.in.Name, err)
	}
	if every := st.in.BackendAuth.RotateEvery.D(); every > 0 && !p.now().Before(rotatedAt.Add(every)) {
		return "", false, nil
	}
	pt, err := p.sealer.Open(sealed, sealAAD(st.in.Name, dbUser))
	if err != nil {
		// iamdb owns this password, so a new one heals it (e.g. after the
		// master key was replaced).
		p.log.Warn("stored backend password does not open; setting a new one", "db_user", dbUser, "err", err)
		return "", false, nil
	}
	pw := string(pt)
	p.pwCache.fill(gen, dbUser, pw, rotatedAt, readAt)
	return pw, true, nil
}

// setPassword gives dbUser a new random password on the upstream and
// stores it sealed. ALTER ROLE and the store write happen inside one
// upstream transaction: if storing fails the role keeps its old password,
// so the store and the database never disagree. The transaction first
// takes an advisory lock on the role, which serializes replicas; unless
// force, a password another replica stored meanwhile is used instead.
// The password cache holds the new password once it is committed; until
// then it holds only what a store read that began after this started saw.
func (p *Postgres) setPassword(ctx context.Context, dbUser string, force bool) (string, error) {
	p.pwCache.forget(dbUser)
	pool, st, err := p.adminPool()
	if err != nil {
		return "", err
	}
	name := st.in.Name
	tx, err := pool.Begin(ctx)
	if err != nil {
		return "", fmt.Errorf("setting the password of database user %q: %w", dbUser, p.adminError(st, err))
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", rotationLockKey(dbUser)); err != nil {
		return "", fmt.Errorf("instance %s: lock database user %q for a password change: %w", name, dbUser, err)
	}
	if !force {
		if pw, ok, err := p.storedPassword(ctx, st, dbUser); err != nil || ok {
			return pw, err
		}
	}
	pw, err := newPassword(rand.Reader)
	if err != nil {
		return "", fmt.Errorf("instance %s: %w", name, err)
	}
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("instance %s: generate SCRAM salt: %w", name, err)
	}
	verifier, err := scramVerifier(pw, salt)
	if err != nil {
		return "", fmt.Errorf("instance %s: %w", name, err)
	}
	stmt := "ALTER ROLE " + pgx.Identifier{dbUser}.Sanitize() + " WITH PASSWORD " + quoteLiteral(verifier)
	if _, err := tx.Exec(ctx, stmt); err != nil {
		return "", p.alterError(st, dbUser, scrub(err, pw, verifier))
	}
	sealed, err := p.sealer.Seal([]byte(pw), sealAAD(name, dbUser))
	if err != nil {
		return "", fmt.Errorf("instance %s: seal the password of database user %q: %w", name, dbUser, err)
	}
	at := p.now()
	if err := p.store.PutBackendPassword(ctx, name, dbUser, sealed, at); err != nil {
		return "", fmt.Errorf("instance %s: %w (the database password was left unchanged)", name, scrub(err, pw, verifier))
	}
	if err := tx.Commit(ctx); err != nil {
		return "", fmt.Errorf("instance %s: commit the new password of database user %q: %w", name, dbUser, scrub(err, pw, verifier))
	}
	p.pwCache.set(dbUser, pw, at, at)
	reason := "no password yet or rotate_every elapsed"
	if force {
		reason = "rotation requested"
	}
	p.log.Info("set a new backend password", "db_user", dbUser, "reason", reason)
	return pw, nil
}

// alterError explains why ALTER ROLE failed. err has already been scrubbed.
func (p *Postgres) alterError(st *state, dbUser string, err error) error {
	in := st.in
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "42704": // undefined_object
			return fmt.Errorf("instance %s: database user %q does not exist on the upstream: %w", in.Name, dbUser, err)
		case "42501": // insufficient_privilege
			return fmt.Errorf("instance %s: admin user %s may not set the password of database user %q: %w (make the admin a superuser, or give it CREATEROLE and, on PostgreSQL 16+, ADMIN OPTION on that role)",
				in.Name, in.BackendAuth.AdminUser, dbUser, err)
		}
	}
	return fmt.Errorf("instance %s: setting the password of database user %q failed: %w", in.Name, dbUser, err)
}

// quoteLiteral quotes s as an SQL string literal. Only the verifier (base64,
// '$', ':' and digits) passes through here, but quote it properly anyway.
func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// scrub makes sure no secret survives in an error's text. Errors that do not
// mention a secret are returned as they are, so errors.Is/As keep working;
// PostgreSQL errors lose the fields that may quote the statement.
func scrub(err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		c := *pgErr
		c.InternalQuery, c.Where = "", ""
		c.Message, c.Detail, c.Hint = redact(c.Message, secrets), redact(c.Detail, secrets), redact(c.Hint, secrets)
		if !containsAny(err.Error(), secrets) {
			return &c
		}
		return fmt.Errorf("%s: %w", redact(err.Error(), secrets), &c)
	}
	if !containsAny(err.Error(), secrets) {
		return err
	}
	return errors.New(redact(err.Error(), secrets))
}

func containsAny(s string, secrets []string) bool {
	for _, x := range secrets {
		if x != "" && strings.Contains(s, x) {
			return true
		}
	}
	return false
}

func redact(s string, secrets []string) string {
	for _, x := range secrets {
		if x != "" {
			s = strings.ReplaceAll(s, x, "[REDACTED]")
		}
	}
	return s
}

// Rotate gives dbUser a new password now (mode managed only). With dbUser
// "" it rotates every user that has a stored password on this instance.
func (p *Postgres) Rotate(ctx context.Context, dbUser string) error {
	if dbUser == "" {
		_, err := p.RotateAll(ctx)
		return err
	}
	st := p.state()
	if err := p.checkRotate(st); err != nil {
		return err
	}
	if err := p.checkManagedUser(st, dbUser); err != nil {
		return err
	}
	if err := p.checkIAMUser(ctx, st, dbUser); err != nil {
		return err
	}
	unlock, err := p.locks.lock(ctx, dbUser)
	if err != nil {
		return fmt.Errorf("instance %s: %w", st.in.Name, err)
	}
	defer unlock()
	_, err = p.setPassword(ctx, dbUser, true)
	return err
}

// RotateAll rotates the password of every user with a stored password on
// this instance and returns those it rotated. Users that are no longer
// IAM-enabled are skipped. It carries on past a user that fails (say, one
// dropped from the database) and reports all failures.
func (p *Postgres) RotateAll(ctx context.Context) ([]string, error) {
	st := p.state()
	if err := p.checkRotate(st); err != nil {
		return nil, err
	}
	lister, ok := p.store.(PasswordLister)
	if !ok {
		return nil, fmt.Errorf("instance %s: the password store cannot list users: name the user to rotate", st.in.Name)
	}
	users, err := lister.ListBackendPasswordUsers(ctx, st.in.Name)
	if err != nil {
		return nil, fmt.Errorf("instance %s: %w", st.in.Name, err)
	}
	var (
		done []string
		errs []error
	)
	for _, u := range users {
		if err := p.Rotate(ctx, u); err != nil {
			if errors.Is(err, ErrNotIAMUser) {
				// Its stored password is dead weight, not a failure.
				p.log.Info("not rotating: no longer IAM-enabled", "db_user", u)
				continue
			}
			errs = append(errs, err)
			continue
		}
		done = append(done, u)
	}
	return done, errors.Join(errs...)
}

func (p *Postgres) checkRotate(st *state) error {
	if m := st.in.BackendAuth.Mode; m != "managed" {
		return fmt.Errorf("instance %s: backend_auth.mode is %s: only mode managed has passwords that iamdb sets and can rotate", st.in.Name, m)
	}
	return nil
}

// userLock is one user's lock; entries are dropped when nobody holds or
// waits for them.
type userLock struct {
	mu   chan struct{}
	refs int
}

// userLocks serializes password changes of one user within this process.
type userLocks struct {
	mu sync.Mutex
	m  map[string]*userLock
}

// lock waits for the lock of dbUser, or until ctx ends (a login's
// handshake deadline must bound the wait too).
func (u *userLocks) lock(ctx context.Context, dbUser string) (unlock func(), err error) {
	u.mu.Lock()
	if u.m == nil {
		u.m = map[string]*userLock{}
	}
	l := u.m[dbUser]
	if l == nil {
		l = &userLock{mu: make(chan struct{}, 1)}
		u.m[dbUser] = l
	}
	l.refs++
	u.mu.Unlock()
	release := func() {
		u.mu.Lock()
		l.refs--
		if l.refs == 0 {
			delete(u.m, dbUser)
		}
		u.mu.Unlock()
	}
	select {
	case l.mu <- struct{}{}:
		return func() { <-l.mu; release() }, nil
	case <-ctx.Done():
		release()
		return nil, fmt.Errorf("waiting for another password change of database user %q: %w", dbUser, context.Cause(ctx))
	}
}
