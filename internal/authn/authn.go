package authn

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iamdb/iamdb/internal/identity"
	"github.com/iamdb/iamdb/internal/policy"
	"github.com/iamdb/iamdb/internal/sigv4"
)

// ConnectAction is the action every database login is authorized for.
const ConnectAction = "rds-db:connect"

// Store is what the authenticator reads from the identity store.
type Store interface {
	Generation(ctx context.Context) (int64, error)
	GetAccessKey(ctx context.Context, id string) (identity.AccessKey, error)
	GetUserByID(ctx context.Context, id string) (identity.User, error)
	GetUser(ctx context.Context, account, name string) (identity.User, error)
	GetRole(ctx context.Context, account, name string) (identity.Role, error)
	GetRoleByID(ctx context.Context, id string) (identity.Role, error)
	GetSession(ctx context.Context, accessKeyID string) (identity.Session, error)
	GetPolicy(ctx context.Context, policyARN string) (identity.ManagedPolicy, error)
	PolicySetForUser(ctx context.Context, account, user string) (identity.PolicySet, error)
	PolicySetForRole(ctx context.Context, account, role string) (identity.PolicySet, error)
	TouchAccessKeyLastUsed(ctx context.Context, id string, at time.Time) error
}

// Opener opens sealed secrets (identity.Sealer).
type Opener interface {
	Open(sealed, aad []byte) ([]byte, error)
}

// Instance is the database instance a client connected to.
type Instance struct {
	Name       string
	Engine     string // postgres | mysql
	Region     string
	AccountID  string
	Partition  string // default "aws"
	ResourceID string
	Endpoints  []string
}

// ResourceARN is the rds-db:connect resource for dbUser on this instance.
func (in *Instance) ResourceARN(dbUser string) string {
	p := in.Partition
	if p == "" {
		p = identity.DefaultPartition
	}
	return "arn:" + p + ":rds-db:" + in.Region + ":" + in.AccountID + ":dbuser:" + in.ResourceID + "/" + dbUser
}

// Request is one login attempt.
type Request struct {
	Token           string
	Instance        *Instance
	DBUser          string
	Database        string
	SourceIP        string
	SecureTransport bool
}

// Decision is an accepted login.
type Decision struct {
	Principal  *Principal
	Resource   string
	Policy     policy.Result
	TokenID    string    // first 12 hex of SHA-256 of the signature
	ValidUntil time.Time // the same token may log in again until then
	// Reused: the token was verified before (signature, key, principal)
	// and came from the verified-token cache; only the policy was
	// evaluated for this login.
	Reused bool
}

// Options tune an Authenticator.
type Options struct {
	Now             func() time.Time
	ClockSkew       time.Duration
	RefreshInterval time.Duration // how often the store generation is polled; default 1s
	// TokenCacheSize bounds the verified-token cache; 0 means
	// DefaultTokenCacheSize, negative turns the cache off.
	TokenCacheSize int
}

// Authenticator decides logins. It is safe for concurrent use.
type Authenticator struct {
	store    Store
	opener   Opener
	verifier *sigv4.Verifier
	now      func() time.Time
	refresh  time.Duration

	mu  sync.RWMutex
	gen int64
	// cacheEpoch counts the resets of keys and sets (under mu): a load
	// that began before a reset must not put its result in the new maps,
	// where a key deactivated or a Deny added meanwhile would be hidden.
	cacheEpoch uint64
	keys       map[string]*keyEntry   // access key id → credentials + principal
	sets       map[string]*policy.Set // principal cache key → parsed policies
	touched    map[string]time.Time   // access key id → last recorded use
	tokens     *tokenCache            // verified tokens; see tokencache.go
	keyLoads   flight[*keyEntry]      // one store read per key id at a time
	setLoads   flight[*policy.Set]    // one store read per principal at a time
	checkedAt  atomic.Int64           // unix nanos of the last generation poll
	polling    atomic.Bool
}

type keyEntry struct {
	creds     sigv4.Credentials
	principal *Principal
}

// New returns an Authenticator over store. opener opens sealed secrets.
func New(store Store, opener Opener, opt Options) *Authenticator {
	a := &Authenticator{
		store:   store,
		opener:  opener,
		now:     opt.Now,
		refresh: opt.RefreshInterval,
		keys:    map[string]*keyEntry{},
		sets:    map[string]*policy.Set{},
		touched: map[string]time.Time{},
		gen:     -1,
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.refresh <= 0 {
		a.refresh = time.Second
	}
	size := opt.TokenCacheSize
	if size == 0 {
		size = DefaultTokenCacheSize
	}
	a.tokens = newTokenCache(size)
	a.verifier = sigv4.NewVerifier(sigv4.KeyLookupFunc(a.lookupKey), sigv4.Options{Now: a.now, ClockSkew: opt.ClockSkew})
	return a
}

// Verifier returns the token verifier the authenticator uses (shared
// signing-key cache), for callers that explain tokens.
func (a *Authenticator) Verifier() *sigv4.Verifier { return a.verifier }

// Invalidate drops every cached key, principal and policy at once. Callers
// that write to the store in this process call it so their change applies
// without waiting for the next poll.
func (a *Authenticator) Invalidate() {
	a.mu.Lock()
	a.keys = map[string]*keyEntry{}
	a.sets = map[string]*policy.Set{}
	a.cacheEpoch++
	a.mu.Unlock()
	a.tokens.reset()
}

// Authenticate verifies req's token and authorizes rds-db:connect. On
// refusal the error is an *Error.
func (a *Authenticator) Authenticate(ctx context.Context, req Request) (*Decision, error) {
	if req.Instance == nil {
		return nil, errors.New("authn: request without instance")
	}
	a.maybeRefresh(ctx)
	key := tokenKey(req)
	e, reused := a.tokens.get(key, a.now())
	if !reused {
		epoch := a.tokens.currentEpoch()
		target := sigv4.Target{Region: req.Instance.Region, Endpoints: req.Instance.Endpoints, DBUser: req.DBUser}
		v, err := a.verifier.Verify(ctx, req.Token, target)
		if err != nil {
			return nil, tokenError(err)
		}
		p, _ := v.Owner.(*Principal)
		if p == nil {
			return nil, &Error{Code: CodeInternal, Detail: "verified key has no principal"}
		}
		e = tokenEntry{principal: p, tokenID: v.Token.ID(), keyID: v.Token.AccessKeyID, until: v.ValidUntil}
		a.tokens.put(key, e, epoch, a.now())
	}
	// Policy is evaluated on every login, cached token or not: conditions
	// such as aws:SourceIp and aws:CurrentTime belong to this login.
	resource := req.Instance.ResourceARN(req.DBUser)
	res, err := a.authorize(ctx, e.principal, resource, req)
	if err != nil {
		return nil, err
	}
	if res.Decision != policy.Allowed {
		return nil, &Error{Code: CodeAccessDenied, Detail: res.Explanation, Principal: e.principal, Policy: &res, TokenID: e.tokenID}
	}
	a.touch(ctx, e.keyID)
	return &Decision{Principal: e.principal, Resource: resource, Policy: res, TokenID: e.tokenID, ValidUntil: e.until, Reused: reused}, nil
}

func (a *Authenticator) authorize(ctx context.Context, p *Principal, resource string, req Request) (policy.Result, error) {
	set, err := a.policySet(ctx, p)
	if err != nil {
		return policy.Result{}, &Error{Code: CodeInternal, Detail: err.Error(), Principal: p}
	}
	pc := p.Context(a.now())
	if req.SourceIP != "" {
		pc.Set("aws:SourceIp", req.SourceIP)
	}
	pc.Set("aws:SecureTransport", strconv.FormatBool(req.SecureTransport))
	pc.Set("iamdb:Instance", req.Instance.Name)
	pc.Set("iamdb:Engine", req.Instance.Engine)
	if req.Database != "" {
		pc.Set("iamdb:Database", req.Database)
	}
	pc.Set("iamdb:DBUser", req.DBUser)
	return policy.Evaluate(*set, policy.Request{Action: ConnectAction, Resource: resource, Context: pc}), nil
}

// touch records key use at most once a minute per key, off the error path.
func (a *Authenticator) touch(ctx context.Context, keyID string) {
	if !strings.HasPrefix(keyID, "AKIA") {
		return
	}
	now := a.now()
	a.mu.Lock()
	last := a.touched[keyID]
	if now.Sub(last) < time.Minute {
		a.mu.Unlock()
		return
	}
	a.touched[keyID] = now
	a.mu.Unlock()
	// Bookkeeping only: a failure here must not refuse a valid login.
	_ = a.store.TouchAccessKeyLastUsed(ctx, keyID, now)
}

// maybeRefresh polls the store generation at most once per refresh interval
// and drops the caches when it changed. Only one caller polls at a time;
// the others go on with the cache as it is.
func (a *Authenticator) maybeRefresh(ctx context.Context) {
	now := a.now().UnixNano()
	if now-a.checkedAt.Load() < int64(a.refresh) {
		return
	}
	if !a.polling.CompareAndSwap(false, true) {
		return
	}
	defer a.polling.Store(false)
	gen, err := a.store.Generation(ctx)
	if err != nil {
		// Keep serving from the cache; the next call tries again.
		return
	}
	a.checkedAt.Store(now)
	a.mu.Lock()
	changed := gen != a.gen
	if changed {
		a.gen = gen
		a.keys = map[string]*keyEntry{}
		a.sets = map[string]*policy.Set{}
		a.cacheEpoch++
	}
	a.mu.Unlock()
	if changed {
		a.tokens.reset()
	}
}

// lookupKey is the sigv4 key lookup: cached credentials and the principal
// that owns them.
func (a *Authenticator) lookupKey(ctx context.Context, id string) (sigv4.Credentials, error) {
	a.mu.RLock()
	e, epoch := a.keys[id], a.cacheEpoch
	a.mu.RUnlock()
	if e != nil {
		return e.creds, nil
	}
	// The epoch is part of the flight key: a login after a reset never
	// joins a load that began before it.
	e, err := a.keyLoads.do(ctx, fmt.Sprintf("%d/%s", epoch, id), func(ctx context.Context) (*keyEntry, error) {
		e, err := a.loadKey(ctx, id)
		if err != nil {
			return nil, err
		}
		a.mu.Lock()
		if a.cacheEpoch == epoch {
			a.keys[id] = e
		}
		a.mu.Unlock()
		return e, nil
	})
	if err != nil {
		return sigv4.Credentials{}, err
	}
	return e.creds, nil
}

func (a *Authenticator) loadKey(ctx context.Context, id string) (*keyEntry, error) {
	creds, p, _, err := LookupKey(ctx, a.store, a.opener, id)
	if err != nil {
		return nil, err
	}
	return &keyEntry{creds: creds, principal: p}, nil
}

// LookupKey finds an access key id in the store: a long-term key (AKIA…) of
// an IAM user, or temporary credentials (ASIA…) of a role session or of
// GetSessionToken. It returns what the token verifier needs (the secret
// opened, the session token's hash, expiry, state; Owner is the principal),
// the principal, and the session for temporary credentials. An unknown key
// wraps sigv4.ErrNoSuchKey. The STS API authenticates its callers with it
// too, so both see one principal for one key.
func LookupKey(ctx context.Context, store Store, opener Opener, id string) (sigv4.Credentials, *Principal, *identity.Session, error) {
	switch {
	case strings.HasPrefix(id, "AKIA"):
		k, err := store.GetAccessKey(ctx, id)
		if err != nil {
			return sigv4.Credentials{}, nil, nil, notFound(err, id)
		}
		secret, err := opener.Open(k.SealedSecret, []byte(k.ID))
		if err != nil {
			return sigv4.Credentials{}, nil, nil, fmt.Errorf("opening the secret of %s: %w", id, err)
		}
		u, err := store.GetUserByID(ctx, k.UserID)
		if err != nil {
			return sigv4.Credentials{}, nil, nil, notFound(err, id)
		}
		p := userPrincipal(u)
		p.AccessKeyID = id
		return sigv4.Credentials{SecretAccessKey: string(secret), Active: k.Status == identity.KeyActive, Owner: p}, p, nil, nil
	case strings.HasPrefix(id, "ASIA"):
		s, err := store.GetSession(ctx, id)
		if err != nil {
			return sigv4.Credentials{}, nil, nil, notFound(err, id)
		}
		secret, err := opener.Open(s.SealedSecret, []byte(s.AccessKeyID))
		if err != nil {
			return sigv4.Credentials{}, nil, nil, fmt.Errorf("opening the secret of %s: %w", id, err)
		}
		p, err := SessionPrincipal(ctx, store, s)
		if err != nil {
			return sigv4.Credentials{}, nil, nil, notFound(err, id)
		}
		return sigv4.Credentials{
			SecretAccessKey:    string(secret),
			SessionTokenSHA256: s.SessionTokenSHA256,
			Expiration:         s.Expiration,
			Active:             true,
			Revoked:            s.Revoked,
			Owner:              p,
		}, p, &s, nil
	}
	return sigv4.Credentials{}, nil, nil, fmt.Errorf("%w: %s is neither a long-term (AKIA) nor a temporary (ASIA) key id", sigv4.ErrNoSuchKey, id)
}

func notFound(err error, id string) error {
	if errors.Is(err, identity.ErrNotFound) {
		return fmt.Errorf("%w: %s", sigv4.ErrNoSuchKey, id)
	}
	return err
}

// SessionPrincipal is the principal of temporary credentials: a role
// session (role tags overridden by session tags), or for GetSessionToken the
// user itself.
func SessionPrincipal(ctx context.Context, store Store, s identity.Session) (*Principal, error) {
	if s.RoleID == "" {
		u, err := store.GetUserByID(ctx, s.UserID)
		if err != nil {
			return nil, err
		}
		p := userPrincipal(u)
		p.AccessKeyID = s.AccessKeyID
		p.Temporary = true
		p.SessionCreated = s.CreatedAt
		return p, nil
	}
	r, err := store.GetRoleByID(ctx, s.RoleID)
	if err != nil {
		return nil, err
	}
	return rolePrincipal(r, s), nil
}

// policySet returns the parsed policies of p, cached per principal.
func (a *Authenticator) policySet(ctx context.Context, p *Principal) (*policy.Set, error) {
	key := p.cacheKey()
	a.mu.RLock()
	set, epoch := a.sets[key], a.cacheEpoch
	a.mu.RUnlock()
	if set != nil {
		return set, nil
	}
	return a.setLoads.do(ctx, fmt.Sprintf("%d/%s", epoch, key), func(ctx context.Context) (*policy.Set, error) {
		set, err := LoadPolicySet(ctx, a.store, p)
		if err != nil {
			return nil, err
		}
		a.mu.Lock()
		if a.cacheEpoch == epoch {
			a.sets[key] = set
		}
		a.mu.Unlock()
		return set, nil
	})
}

// LoadPolicySet reads and parses every policy that applies to p: identity
// policies, the permissions boundary, and for role sessions the session
// policies. A stored document that no longer parses is an error, not a
// silent skip: skipping a Deny would widen access.
func LoadPolicySet(ctx context.Context, store Store, p *Principal) (*policy.Set, error) {
	var raw identity.PolicySet
	var err error
	if p.RoleName != "" {
		raw, err = store.PolicySetForRole(ctx, p.AccountID, p.RoleName)
	} else {
		raw, err = store.PolicySetForUser(ctx, p.AccountID, p.UserName)
	}
	if err != nil {
		return nil, fmt.Errorf("loading the policies of %s: %w", p.ARN, err)
	}
	set := &policy.Set{}
	for _, d := range raw.Policies {
		pol, err := parseStored(d)
		if err != nil {
			return nil, err
		}
		set.Identity = append(set.Identity, pol)
	}
	if raw.Boundary != nil {
		pol, err := parseStored(*raw.Boundary)
		if err != nil {
			return nil, err
		}
		set.Boundary = []policy.Policy{pol}
	}
	if p.SessionPolicy != "" {
		pol, err := parseStored(identity.PolicyDocument{ID: "session/inline", Document: p.SessionPolicy})
		if err != nil {
			return nil, err
		}
		set.Session = append(set.Session, pol)
	}
	for _, arn := range p.SessionPolicyARNs {
		mp, err := store.GetPolicy(ctx, arn)
		if err != nil {
			return nil, fmt.Errorf("loading session policy %s: %w", arn, err)
		}
		pol, err := parseStored(identity.PolicyDocument{ID: arn, Document: mp.DefaultDocument()})
		if err != nil {
			return nil, err
		}
		set.Session = append(set.Session, pol)
	}
	return set, nil
}

func parseStored(d identity.PolicyDocument) (policy.Policy, error) {
	doc, err := policy.Parse([]byte(d.Document))
	if err != nil {
		return policy.Policy{}, fmt.Errorf("stored policy %s does not parse: %w", d.ID, err)
	}
	return policy.Policy{ID: d.ID, Doc: doc}, nil
}
