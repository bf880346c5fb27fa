package datadir

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/iamdb/iamdb/internal/identity"
	"github.com/iamdb/iamdb/internal/identity/sqlstore"
	"github.com/iamdb/iamdb/internal/pki"
)

// File names inside the data directory.
const (
	MasterKeyFile = "master.key"
	StoreFile     = "iamdb.db"
	MetaFile      = "iamdb.json"
)

// AdminPolicyName is the managed policy init attaches to the admin user.
const AdminPolicyName = "AdministratorAccess"

const adminPolicyDocument = `{"Version":"2012-10-17","Statement":[{"Sid":"FullAccess","Effect":"Allow","Action":"*","Resource":"*"}]}`

// Meta is what the directory records about itself.
type Meta struct {
	AccountID string    `json:"account_id"`
	Partition string    `json:"partition"`
	CreatedAt time.Time `json:"created_at"`
}

// InitOptions tune Init; the zero value is fine.
type InitOptions struct {
	AccountID string   // default: a random 12-digit id
	Partition string   // default "aws"
	AdminUser string   // default "admin"
	Hosts     []string // extra names for the server certificate
	Store     string   // shared store DSN; default SQLite in the directory
	Now       func() time.Time
}

// InitResult is what Init created. SecretAccessKey is shown to the operator
// once and exists nowhere else in plaintext.
type InitResult struct {
	Dir             string
	AccountID       string
	AdminARN        string
	AccessKeyID     string
	SecretAccessKey string
	CABundle        string
}

// Dir is an opened data directory.
type Dir struct {
	Path   string
	Meta   Meta
	Sealer *identity.Sealer
	Store  *sqlstore.Store
}

// Close releases the store.
func (d *Dir) Close() error { return d.Store.Close() }

// Init creates a data directory at dir.
func Init(ctx context.Context, dir string, opt InitOptions) (res *InitResult, err error) {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Partition == "" {
		opt.Partition = identity.DefaultPartition
	}
	if opt.AdminUser == "" {
		opt.AdminUser = "admin"
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", dir, err)
	}
	if _, err := os.Stat(filepath.Join(abs, MasterKeyFile)); err == nil {
		return nil, fmt.Errorf("%s is already an iamdb data directory (it has a %s); use it as it is, or choose another directory", abs, MasterKeyFile)
	}
	created, err := prepareDir(abs)
	if err != nil {
		return nil, err
	}
	// Undo on failure: the whole directory if we made it, else our files.
	var made []string
	defer func() {
		if err == nil {
			return
		}
		if created {
			os.RemoveAll(abs)
			return
		}
		for _, f := range made {
			os.Remove(f)
		}
	}()
	track := func(names ...string) {
		for _, n := range names {
			made = append(made, filepath.Join(abs, n))
		}
	}

	keyPath := filepath.Join(abs, MasterKeyFile)
	track(MasterKeyFile)
	if err := identity.CreateMasterKey(keyPath); err != nil {
		return nil, err
	}
	track(pki.CAFile, pki.CAKeyFile, pki.BundleFile, pki.ServerCertFile, pki.ServerKeyFile)
	ca, err := pki.CreateCA(abs, "iamdb CA", opt.Now())
	if err != nil {
		return nil, err
	}
	if _, err := pki.EnsureServerCert(abs, ca, opt.Hosts, opt.Now()); err != nil {
		return nil, err
	}

	key, err := identity.LoadMasterKey(keyPath)
	if err != nil {
		return nil, err
	}
	sealer, err := identity.NewSealer(key)
	if err != nil {
		return nil, err
	}
	dsn := opt.Store
	if dsn == "" {
		dsn = filepath.Join(abs, StoreFile)
		track(StoreFile, StoreFile+"-wal", StoreFile+"-shm")
	}
	store, err := sqlstore.Open(ctx, dsn, sealer, sqlstore.WithPartition(opt.Partition), sqlstore.WithClock(opt.Now))
	if err != nil {
		return nil, fmt.Errorf("opening the identity store: %w", err)
	}
	defer store.Close()
	if opt.Store == "" {
		// Sealed secrets are still secrets: keep the file owner-only.
		if err := os.Chmod(dsn, 0o600); err != nil {
			return nil, fmt.Errorf("restricting %s: %w", dsn, err)
		}
	}

	acct, err := store.CreateAccount(ctx, identity.Account{ID: opt.AccountID})
	if err != nil {
		return nil, fmt.Errorf("creating the default account: %w", err)
	}
	admin, err := store.CreateUser(ctx, identity.User{AccountID: acct.ID, Name: opt.AdminUser, Path: "/"})
	if err != nil {
		return nil, fmt.Errorf("creating the admin user: %w", err)
	}
	pol, err := store.CreatePolicy(ctx, identity.ManagedPolicy{AccountID: acct.ID, Name: AdminPolicyName, Path: "/"}, adminPolicyDocument)
	if err != nil {
		return nil, fmt.Errorf("creating the %s policy: %w", AdminPolicyName, err)
	}
	if err := store.AttachPolicy(ctx, identity.UserRef(acct.ID, admin.Name), pol.ARN()); err != nil {
		return nil, fmt.Errorf("attaching %s to %s: %w", AdminPolicyName, admin.Name, err)
	}
	ak, secret, err := store.CreateAccessKey(ctx, acct.ID, admin.Name)
	if err != nil {
		return nil, fmt.Errorf("creating the admin access key: %w", err)
	}

	track(MetaFile)
	meta := Meta{AccountID: acct.ID, Partition: opt.Partition, CreatedAt: opt.Now().UTC()}
	if err := writeMeta(abs, meta); err != nil {
		return nil, err
	}
	return &InitResult{
		Dir:             abs,
		AccountID:       acct.ID,
		AdminARN:        admin.ARN(),
		AccessKeyID:     ak.ID,
		SecretAccessKey: secret,
		CABundle:        filepath.Join(abs, pki.BundleFile),
	}, nil
}

// prepareDir makes dir (mode 0700) or checks an existing one is usable. It
// reports whether it created the directory.
func prepareDir(dir string) (bool, error) {
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return false, fmt.Errorf("creating data directory: %w", err)
		}
		return true, nil
	case err != nil:
		return false, fmt.Errorf("checking data directory: %w", err)
	case !st.IsDir():
		return false, fmt.Errorf("%s exists and is not a directory: choose another --data-dir", dir)
	}
	return false, nil
}

func writeMeta(dir string, m Meta) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, MetaFile), append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", MetaFile, err)
	}
	return nil
}

// Open opens an initialised data directory. storeDSN selects a shared store
// ("" = the directory's SQLite file).
func Open(ctx context.Context, dir, storeDSN, partition string) (*Dir, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", dir, err)
	}
	raw, err := os.ReadFile(filepath.Join(abs, MetaFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s is not an iamdb data directory: run 'iamdb init --data-dir %s' first, or pass the right --data-dir", abs, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", MetaFile, err)
	}
	var meta Meta
	if err := json.Unmarshal(raw, &meta); err != nil {
		return nil, fmt.Errorf("%s in %s is damaged: %w", MetaFile, abs, err)
	}
	if partition == "" {
		partition = meta.Partition
	}
	key, err := identity.LoadMasterKey(filepath.Join(abs, MasterKeyFile))
	if err != nil {
		return nil, err
	}
	sealer, err := identity.NewSealer(key)
	if err != nil {
		return nil, err
	}
	if storeDSN == "" {
		storeDSN = filepath.Join(abs, StoreFile)
	}
	store, err := sqlstore.Open(ctx, storeDSN, sealer, sqlstore.WithPartition(partition))
	if err != nil {
		return nil, fmt.Errorf("opening the identity store: %w", err)
	}
	return &Dir{Path: abs, Meta: meta, Sealer: sealer, Store: store}, nil
}
