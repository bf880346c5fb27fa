package identity

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// MasterKeySize is the size of the data dir's master key (AES-256).
const MasterKeySize = 32

// sealVersion prefixes every sealed value so the format (and, later, the key
// generation) can change without guessing.
const sealVersion byte = 1

// ErrUnseal is returned when a sealed value cannot be opened: wrong master
// key, wrong record id (additional data) or tampered bytes.
var ErrUnseal = errors.New("cannot open sealed secret: wrong master key, wrong record or corrupted data")

// Sealer encrypts secrets at rest with AES-256-GCM under the master key.
// Sealed values are version byte || 12-byte random nonce || ciphertext+tag.
// Callers pass the record's id as additional data so a sealed secret copied
// onto another record does not open.
type Sealer struct {
	aead cipher.AEAD
	rand io.Reader
}

// NewSealer returns a Sealer for a 32-byte key. Nonces come from
// crypto/rand.
func NewSealer(key []byte) (*Sealer, error) {
	return NewSealerWithRand(key, rand.Reader)
}

// NewSealerWithRand is NewSealer with an injected nonce source, for tests.
func NewSealerWithRand(key []byte, r io.Reader) (*Sealer, error) {
	if len(key) != MasterKeySize {
		return nil, fmt.Errorf("master key is %d bytes: it must be exactly %d", len(key), MasterKeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	return &Sealer{aead: aead, rand: r}, nil
}

// Seal encrypts plaintext bound to aad (the record id).
func (s *Sealer) Seal(plaintext, aad []byte) ([]byte, error) {
	ns := s.aead.NonceSize()
	out := make([]byte, 1+ns, 1+ns+len(plaintext)+s.aead.Overhead())
	out[0] = sealVersion
	if _, err := io.ReadFull(s.rand, out[1:]); err != nil {
		return nil, fmt.Errorf("seal: read nonce: %w", err)
	}
	return s.aead.Seal(out, out[1:1+ns], plaintext, aad), nil
}

// Open decrypts a value produced by Seal with the same aad.
func (s *Sealer) Open(sealed, aad []byte) ([]byte, error) {
	ns := s.aead.NonceSize()
	if len(sealed) < 1+ns+s.aead.Overhead() || sealed[0] != sealVersion {
		return nil, ErrUnseal
	}
	pt, err := s.aead.Open(nil, sealed[1:1+ns], sealed[1+ns:], aad)
	if err != nil {
		// The GCM error says nothing useful and nothing secret; keep ours.
		return nil, ErrUnseal
	}
	return pt, nil
}

// SealSecret seals a secret string for the record id.
func (s *Sealer) SealSecret(recordID, secret string) ([]byte, error) {
	return s.Seal([]byte(secret), []byte(recordID))
}

// OpenSecret opens what SealSecret sealed for the record id, e.g. the
// SealedSecret of an AccessKey or Session with its access key id.
func (s *Sealer) OpenSecret(recordID string, sealed []byte) (string, error) {
	pt, err := s.Open(sealed, []byte(recordID))
	if err != nil {
		return "", fmt.Errorf("secret of %s: %w", recordID, err)
	}
	return string(pt), nil
}

// CreateMasterKey writes 32 random bytes to path with mode 0600. It refuses
// to overwrite an existing file: losing the master key loses every sealed
// secret.
func CreateMasterKey(path string) error {
	return createMasterKey(path, rand.Reader)
}

func createMasterKey(path string, r io.Reader) error {
	key := make([]byte, MasterKeySize)
	if _, err := io.ReadFull(r, key); err != nil {
		return fmt.Errorf("create master key: read random bytes: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create master key: %s already exists; refusing to overwrite it (every stored secret depends on it)", path)
	}
	if err != nil {
		return fmt.Errorf("create master key: %w", err)
	}
	if _, err := f.Write(key); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("create master key %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("create master key %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("create master key %s: %w", path, err)
	}
	return nil
}

// LoadMasterKey reads the master key. It refuses a file that the group or
// others may read or write, and a file that is not exactly 32 bytes.
func LoadMasterKey(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("load master key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("load master key: %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("load master key: %s has mode %04o, so other users may read it; it must be private to its owner: run chmod 600 %s", path, perm, path)
	}
	key, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load master key: %w", err)
	}
	if len(key) != MasterKeySize {
		return nil, fmt.Errorf("load master key: %s holds %d bytes, expected %d: the file is damaged or not a master key", path, len(key), MasterKeySize)
	}
	return key, nil
}
