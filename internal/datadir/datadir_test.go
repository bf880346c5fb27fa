package datadir

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestInitAndOpen(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	res, err := Init(ctx, dir, InitOptions{Hosts: []string{"db.example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.AccountID) != 12 || !strings.HasPrefix(res.AccessKeyID, "AKIA") || len(res.SecretAccessKey) != 40 {
		t.Fatalf("unexpected result: account %q key %q secret length %d", res.AccountID, res.AccessKeyID, len(res.SecretAccessKey))
	}
	if res.AdminARN != "arn:aws:iam::"+res.AccountID+":user/admin" {
		t.Fatalf("admin ARN %s", res.AdminARN)
	}
	st, err := os.Stat(filepath.Join(dir, MasterKeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("master key mode: %v %v", st, err)
	}
	if st, err := os.Stat(filepath.Join(dir, StoreFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("store file mode: %v %v", st, err)
	}
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("data dir mode: %v %v", st, err)
	}
	if _, err := os.Stat(res.CABundle); err != nil {
		t.Fatal(err)
	}
	// The secret is in no file of the directory.
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, _ := os.ReadFile(p)
		if strings.Contains(string(data), res.SecretAccessKey) {
			t.Errorf("%s contains the plaintext secret", p)
		}
		return nil
	})

	if _, err := Init(ctx, dir, InitOptions{}); err == nil || !strings.Contains(err.Error(), "already an iamdb data directory") {
		t.Fatalf("second init: %v", err)
	}

	d, err := Open(ctx, dir, "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Meta.AccountID != res.AccountID {
		t.Fatalf("meta account %s", d.Meta.AccountID)
	}
	key, err := d.Store.GetAccessKey(ctx, res.AccessKeyID)
	if err != nil {
		t.Fatal(err)
	}
	secret, err := d.Sealer.Open(key.SealedSecret, []byte(key.ID))
	if err != nil || string(secret) != res.SecretAccessKey {
		t.Fatalf("sealed secret does not open to the printed one: %v", err)
	}
	set, err := d.Store.PolicySetForUser(ctx, res.AccountID, "admin")
	if err != nil || len(set.Policies) != 1 || !strings.Contains(set.Policies[0].Document, `"Action":"*"`) {
		t.Fatalf("admin policies: %+v %v", set, err)
	}
}

func TestInitFailureLeavesNothing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	// An invalid account id makes the store refuse after keys and
	// certificates were written; all of it must be gone again.
	if _, err := Init(context.Background(), dir, InitOptions{AccountID: "12"}); err == nil {
		t.Fatal("init with a bad account id succeeded")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("failed init left %s behind (%v)", dir, err)
	}

	// In a directory that existed before, only our files are removed.
	pre := t.TempDir()
	keep := filepath.Join(pre, "keep.txt")
	os.WriteFile(keep, []byte("x"), 0o600)
	if _, err := Init(context.Background(), pre, InitOptions{AccountID: "12"}); err == nil {
		t.Fatal("init with a bad account id succeeded")
	}
	entries, _ := os.ReadDir(pre)
	if len(entries) != 1 || entries[0].Name() != "keep.txt" {
		names := []string{}
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("failed init left files behind: %v", names)
	}
}

func TestOpenNotInitialised(t *testing.T) {
	_, err := Open(context.Background(), t.TempDir(), "", "")
	if err == nil || !strings.Contains(err.Error(), "run 'iamdb init") {
		t.Fatalf("got %v", err)
	}
}
