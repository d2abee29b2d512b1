// Package connection is a tenant's connection to its own source: which connector and org, how it
// authenticates, its credential sealed with envelope encryption, and the one refresher at a time
// that may exchange its refresh token.
//
// # Secrets
//
// A credential (a JWT bearer flow's private key, or a refresh token) is stored only sealed
// (Sealer: tink AEAD, the tenant's ID as associated data) in connections/{tenant}; the keyset
// itself is encrypted by a Cloud KMS key in production. Credential is a type whose String,
// GoString, MarshalJSON and LogValue redact it, so that it cannot reach a log, a span, a dead
// letter or an error by accident.
//
// # Rotation
//
// Salesforce may rotate refresh tokens: each refresh answers a new one and the old one stops
// working. Two instances refreshing at once with the same token would lose the connection (the
// second exchange is refused). Keeper.Exchange makes one refresher per tenant at a time, under a
// fenced lease on the connection's document: it reads the latest refresh token under the lease,
// exchanges it, and stores the rotated one, conditioned on still holding the lease, before the
// new access token is used. An instance that crashes between the exchange and the write leaves
// the lease to run out with the exchange marked started: the next refresher's exchange of the
// old token is refused, and the connection is reported disconnected with that reason, never
// silently broken.
package connection

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"cloud.google.com/go/firestore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/source"
)

// Methods of authentication.
const (
	MethodJWT     = "jwt"           // the connected app's JWT bearer flow: a private key, a username
	MethodRefresh = "refresh_token" // the refresh-token flow, after a user's web-server consent
)

// Connection is connections/{tenant}: everything about the tenant's source connection but the
// secret in the clear.
type Connection struct {
	TenantID    string    `firestore:"-" json:"tenant"`
	Connector   string    `firestore:"connector" json:"connector"`
	LoginURL    string    `firestore:"loginUrl" json:"loginUrl"`       // production, sandbox or My Domain
	InstanceURL string    `firestore:"instanceUrl" json:"instanceUrl"` // from the last token answer
	Method      string    `firestore:"method" json:"method"`
	ClientID    string    `firestore:"clientId" json:"clientId"`
	Username    string    `firestore:"username,omitempty" json:"username,omitempty"`
	Sealed      []byte    `firestore:"sealed" json:"-"`  // the credential, sealed; never plaintext
	Version     int       `firestore:"version" json:"-"` // +1 each time a credential is stored
	ConnectedAt time.Time `firestore:"connectedAt" json:"connectedAt"`
	LastRefresh time.Time `firestore:"lastRefresh" json:"lastRefresh"`
	// The refresher lease: who may exchange the refresh token now, until when, and when its
	// exchange started (cleared once the result is stored).
	Refresher    string    `firestore:"refresher" json:"-"`
	RefreshUntil time.Time `firestore:"refreshUntil" json:"-"`
	ExchangeAt   time.Time `firestore:"exchangeAt" json:"-"`
}

// Credential is a secret: a private key or a refresh token. It prints as [redacted] everywhere.
type Credential []byte

func (Credential) String() string               { return "[redacted]" }
func (Credential) GoString() string             { return "[redacted]" }
func (Credential) MarshalJSON() ([]byte, error) { return []byte(`"[redacted]"`), nil }
func (Credential) LogValue() slog.Value         { return slog.StringValue("[redacted]") }
func (c Credential) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte("[redacted]")) }
func (c Credential) Reveal() []byte             { return []byte(c) } // for the one request that sends it
func (c Credential) Empty() bool                { return len(c) == 0 }

// associated is the associated data a tenant's credential is sealed with.
func associated(tenant string) []byte { return []byte("oncesync/connection/" + tenant) }

// Store keeps connections in Firestore, their credentials sealed.
type Store struct {
	FS     *firestore.Client
	Sealer Sealer
	Now    func() time.Time
}

// now is the store's clock, to Firestore's precision (microseconds), so that a time written and
// read back compares equal: the lease's fence depends on it.
func (s Store) now() time.Time {
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	return now().UTC().Truncate(time.Microsecond)
}

func (s Store) ref(tenant string) *firestore.DocumentRef {
	return s.FS.Collection(model.Connections).Doc(tenant)
}

// ErrNoConnection is returned for a tenant that has none.
var ErrNoConnection = errors.New("connection: the tenant has no connection")

// Connect stores c, with its credential sealed, replacing any earlier connection of the tenant
// (a reconnection): the lease and any interrupted exchange are cleared.
func (s Store) Connect(ctx context.Context, c Connection, cred Credential) error {
	if cred.Empty() {
		return errors.New("connection: no credential")
	}
	sealed, err := s.Sealer.Seal(cred.Reveal(), associated(c.TenantID))
	if err != nil {
		return err
	}
	old, err := s.Get(ctx, c.TenantID)
	if err != nil && !errors.Is(err, ErrNoConnection) {
		return err
	}
	c.Sealed, c.Version, c.ConnectedAt = sealed, old.Version+1, s.now()
	c.Refresher, c.RefreshUntil, c.ExchangeAt = "", time.Time{}, time.Time{}
	if _, err := s.ref(c.TenantID).Set(ctx, c); err != nil {
		return fmt.Errorf("connection: store %s: %w", c.TenantID, err)
	}
	return nil
}

// Get reads the tenant's connection (its credential still sealed).
func (s Store) Get(ctx context.Context, tenant string) (Connection, error) {
	snap, err := s.ref(tenant).Get(ctx)
	if status.Code(err) == codes.NotFound {
		return Connection{TenantID: tenant}, fmt.Errorf("connection: tenant %q: %w", tenant, ErrNoConnection)
	}
	if err != nil {
		return Connection{}, fmt.Errorf("connection: read %s: %w", tenant, err)
	}
	var c Connection
	if err := snap.DataTo(&c); err != nil {
		return Connection{}, fmt.Errorf("connection: decode %s: %w", tenant, err)
	}
	c.TenantID = tenant
	return c, nil
}

// Credential opens the tenant's credential.
func (s Store) Credential(c Connection) (Credential, error) {
	if len(c.Sealed) == 0 {
		return nil, fmt.Errorf("connection: tenant %q: no credential is stored: %w", c.TenantID, source.ErrDisconnected)
	}
	b, err := s.Sealer.Open(c.Sealed, associated(c.TenantID))
	if err != nil {
		return nil, fmt.Errorf("connection: tenant %q: %w: %w", c.TenantID, err, source.ErrDisconnected)
	}
	return Credential(b), nil
}

// Restore puts back a connection as it was read (its credential still sealed): what a refused
// reconnection leaves.
func (s Store) Restore(ctx context.Context, c Connection) error {
	if _, err := s.ref(c.TenantID).Set(ctx, c); err != nil {
		return fmt.Errorf("connection: restore %s: %w", c.TenantID, err)
	}
	return nil
}

// Disconnect deletes the tenant's connection: its credential is gone.
func (s Store) Disconnect(ctx context.Context, tenant string) error {
	if _, err := s.ref(tenant).Delete(ctx); err != nil {
		return fmt.Errorf("connection: delete %s: %w", tenant, err)
	}
	return nil
}

func isNotFound(err error) bool { return status.Code(err) == codes.NotFound }
