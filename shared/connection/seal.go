package connection

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/tink-crypto/tink-go-gcpkms/v2/integration/gcpkms"
	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/insecurecleartextkeyset"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/tink"
)

// Sealer encrypts credentials with associated data (the tenant's ID), so that a sealed credential
// can be opened only as its own tenant's: one moved to another tenant's document does not open.
type Sealer interface {
	Seal(plaintext, associated []byte) ([]byte, error)
	Open(sealed, associated []byte) ([]byte, error)
}

// Keyset is a Sealer on a tink AEAD keyset (AES256-GCM): envelope encryption, where the keyset
// is the data key. In production the keyset is stored encrypted by a Cloud KMS key (LoadKMS);
// local runs, the demo and the tests use a cleartext keyset file (LoadLocal, NewLocal).
type Keyset struct{ a tink.AEAD }

var _ Sealer = (*Keyset)(nil)

// Seal implements Sealer.
func (k *Keyset) Seal(plaintext, associated []byte) ([]byte, error) {
	out, err := k.a.Encrypt(plaintext, associated)
	if err != nil {
		return nil, fmt.Errorf("connection: seal: %w", err)
	}
	return out, nil
}

// Open implements Sealer. Its error never holds the plaintext.
func (k *Keyset) Open(sealed, associated []byte) ([]byte, error) {
	out, err := k.a.Decrypt(sealed, associated)
	if err != nil {
		return nil, errors.New("connection: the credential does not open with this keyset and tenant")
	}
	return out, nil
}

// NewLocal returns a new keyset and its cleartext JSON, for local runs only.
func NewLocal() (*Keyset, []byte, error) {
	h, err := keyset.NewHandle(aead.AES256GCMKeyTemplate())
	if err != nil {
		return nil, nil, fmt.Errorf("connection: new keyset: %w", err)
	}
	var b bytes.Buffer
	if err := insecurecleartextkeyset.Write(h, keyset.NewJSONWriter(&b)); err != nil {
		return nil, nil, fmt.Errorf("connection: write keyset: %w", err)
	}
	k, err := fromHandle(h)
	return k, b.Bytes(), err
}

// LoadLocal reads a cleartext JSON keyset (local runs: the demo, the tests).
func LoadLocal(path string) (*Keyset, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("connection: keyset: %w", err)
	}
	h, err := insecurecleartextkeyset.Read(keyset.NewJSONReader(bytes.NewReader(b)))
	if err != nil {
		return nil, fmt.Errorf("connection: keyset %s: %w", path, err)
	}
	return fromHandle(h)
}

// LoadKMS reads a JSON keyset encrypted by the key-encryption AEAD kek: in production, a Cloud
// KMS key's (tink-go-gcpkms), which terraform creates and only the functions that need
// credentials may use. There is no KMS emulator, so production is the only caller.
func LoadKMS(_ context.Context, encrypted []byte, kek tink.AEAD) (*Keyset, error) {
	h, err := keyset.Read(keyset.NewJSONReader(bytes.NewReader(encrypted)), kek)
	if err != nil {
		return nil, fmt.Errorf("connection: encrypted keyset: %w", err)
	}
	return fromHandle(h)
}

func fromHandle(h *keyset.Handle) (*Keyset, error) {
	a, err := aead.New(h)
	if err != nil {
		return nil, fmt.Errorf("connection: aead: %w", err)
	}
	return &Keyset{a: a}, nil
}

// LoadKeyset reads the keyset at path: encrypted by the Cloud KMS key kmsKey (gcp-kms://…), as
// deployed, or cleartext when kmsKey is empty (local runs). The KMS path has no emulator to be
// tested against; it is tink's own client (tink-go-gcpkms).
func LoadKeyset(ctx context.Context, path, kmsKey string) (*Keyset, error) {
	if kmsKey == "" {
		return LoadLocal(path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("connection: keyset: %w", err)
	}
	kek, err := kmsAEAD(ctx, kmsKey)
	if err != nil {
		return nil, err
	}
	return LoadKMS(ctx, b, kek)
}

// kmsAEAD is the Cloud KMS key kmsKey (gcp-kms://…) as a key-encryption AEAD.
func kmsAEAD(ctx context.Context, kmsKey string) (tink.AEAD, error) {
	client, err := gcpkms.NewClientWithOptions(ctx, "gcp-kms://")
	if err != nil {
		return nil, fmt.Errorf("connection: KMS client: %w", err)
	}
	kek, err := client.GetAEAD(kmsKey)
	if err != nil {
		return nil, fmt.Errorf("connection: KMS key %s: %w", kmsKey, err)
	}
	return kek, nil
}

// NewEncrypted makes a new keyset and returns it encrypted by the Cloud KMS key kmsKey
// (gcp-kms://…), as JSON: what the deployment's keyset secret holds.
func NewEncrypted(ctx context.Context, kmsKey string) ([]byte, error) {
	kek, err := kmsAEAD(ctx, kmsKey)
	if err != nil {
		return nil, err
	}
	h, err := keyset.NewHandle(aead.AES256GCMKeyTemplate())
	if err != nil {
		return nil, fmt.Errorf("connection: new keyset: %w", err)
	}
	var b bytes.Buffer
	if err := h.Write(keyset.NewJSONWriter(&b), kek); err != nil {
		return nil, fmt.Errorf("connection: encrypt keyset: %w", err)
	}
	return b.Bytes(), nil
}
