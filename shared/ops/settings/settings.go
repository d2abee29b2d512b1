// Package settings writes the documents that say what oncesync imports: tenants/{id} and
// syncSettings/{id} (docs/design.md, "Data model"), and asks for a setting's window to be
// imported again (Resync). It validates them as the pipeline will read
// them, so that a setting the scheduler would skip (dead letter kind "setting") or a query the
// source would refuse is rejected when it is written, with the reason, instead of at the next
// tick.
//
// Writes are create-if-absent (adding what exists is an error, never an overwrite) or conditioned
// on the document existing (enable, disable): a typo never creates a document.
package settings

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/oncesync/oncesync/shared/source/connectors"

	"cloud.google.com/go/firestore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/oncesync/oncesync/shared/bus"
	"github.com/oncesync/oncesync/shared/config"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/source"
	"github.com/oncesync/oncesync/shared/store"
)

// Errors the Admin's methods wrap.
var (
	ErrInvalid       = errors.New("settings: invalid")
	ErrExists        = errors.New("settings: already exists")
	ErrNotFound      = errors.New("settings: not found")
	ErrUnknownTenant = errors.New("settings: unknown tenant")
)

// An ID of a tenant or a setting: it becomes part of document IDs, Job IDs
// ({settingId}-{hash}), idempotency keys ({scope}~{id}) and log fields, so it is kept to
// characters none of those give a meaning.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$`)

func checkID(what, id string) error {
	if !idPattern.MatchString(id) {
		return fmt.Errorf("%s ID %q: use 1 to 100 letters, digits, '-' or '_', starting with a letter or digit", what, id)
	}
	return nil
}

// ValidateTenant reports every reason t cannot be written, wrapping ErrInvalid.
func ValidateTenant(t model.Tenant, c connectors.Connector) error {
	var errs []error
	if err := checkID("tenant", t.ID); err != nil {
		errs = append(errs, err)
	}
	if most := c.Limits.MaxConcurrentSearches; t.SearchConcurrency < 0 || t.SearchConcurrency > most {
		errs = append(errs, fmt.Errorf("search concurrency %d outside 0..%d, what %s runs at once (0: the deployment default)", t.SearchConcurrency, most, c.Kind))
	}
	return invalid(errs)
}

// ValidateSetting reports every reason s cannot be written, wrapping ErrInvalid: its IDs, the
// source object and fields as connector c will query them (its own ValidateQuery: for Salesforce,
// SOQL identifiers, Id and SystemModstamp left out, none twice), a known target kind, and a chunk
// size the importer accepts.
func ValidateSetting(s model.SyncSetting, c connectors.Connector) error {
	var errs []error
	if err := checkID("setting", s.ID); err != nil {
		errs = append(errs, err)
	}
	if err := checkID("tenant", s.TenantID); err != nil {
		errs = append(errs, err)
	}
	if s.SourceObject == "" {
		errs = append(errs, errors.New("no source object"))
	}
	// The connector's own check of the query the expander will send (deleted records included;
	// its window here is any valid one).
	q := source.Query{Object: s.SourceObject, Fields: s.Fields, From: s.Watermark, To: time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC), Deleted: true}
	if s.SourceObject != "" {
		if err := c.ValidateQuery(q); err != nil {
			errs = append(errs, fmt.Errorf("the source would refuse it: %v", err))
		}
	}
	if _, ok := model.Kind(s.Target); !ok {
		errs = append(errs, fmt.Errorf("unknown target %q (one of %s)", s.Target, strings.Join(Targets(), ", ")))
	}
	if s.ChunkSize < 0 || s.ChunkSize > config.MaxChunkSize {
		errs = append(errs, fmt.Errorf("chunk size %d outside 1..%d (0: the deployment default)", s.ChunkSize, config.MaxChunkSize))
	}
	if s.APIReserve < 0 {
		errs = append(errs, fmt.Errorf("API reserve %d is negative (0: no reserve)", s.APIReserve))
	}
	if s.LastJobID != "" {
		errs = append(errs, errors.New("lastJobId is the scheduler's to write"))
	}
	return invalid(errs)
}

// Targets names the target kinds a setting may name.
func Targets() []string {
	var out []string
	for _, k := range model.TargetKinds {
		out = append(out, k.Name)
	}
	return out
}

func invalid(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrInvalid, errors.Join(errs...))
}

// Admin reads and writes tenants and sync settings.
type Admin struct {
	FS *firestore.Client
	// Connector checks tenants and settings against its limits and its own query rules (its zero
	// value: the deployment's default connector, Salesforce).
	Connector connectors.Connector
	Now       func() time.Time // the clock a resync Job's createdAt comes from (nil: time.Now)
}

// connector is a's connector, or the default one.
func (a Admin) connector() connectors.Connector {
	if a.Connector.Kind != "" {
		return a.Connector
	}
	c, err := connectors.Get(config.Default().SourceKind)
	if err != nil {
		panic(err) // the default kind is registered: TestDefaultConnectorIsRegistered
	}
	return c
}

// AddTenant creates tenants/{t.ID}; ErrExists if it exists.
func (a Admin) AddTenant(ctx context.Context, t model.Tenant) error {
	if err := ValidateTenant(t, a.connector()); err != nil {
		return err
	}
	_, err := a.FS.Collection(model.Tenants).Doc(t.ID).Create(ctx, t)
	if status.Code(err) == codes.AlreadyExists {
		return fmt.Errorf("tenant %q: %w", t.ID, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("settings: add tenant %q: %w", t.ID, err)
	}
	return nil
}

// AddSetting creates syncSettings/{s.ID} for an existing tenant, in one transaction with the
// tenant's read: ErrUnknownTenant without it, ErrExists if the setting exists. The setting's
// first Job imports from s.Watermark (zero: everything the source has).
func (a Admin) AddSetting(ctx context.Context, s model.SyncSetting) error {
	if err := ValidateSetting(s, a.connector()); err != nil {
		return err
	}
	s.Watermark = s.Watermark.UTC()
	err := a.FS.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		if _, err := tx.Get(a.FS.Collection(model.Tenants).Doc(s.TenantID)); status.Code(err) == codes.NotFound {
			return fmt.Errorf("setting %q: tenant %q: %w (add it first)", s.ID, s.TenantID, ErrUnknownTenant)
		} else if err != nil {
			return err
		}
		return tx.Create(a.FS.Collection(model.SyncSettings).Doc(s.ID), s)
	})
	if status.Code(err) == codes.AlreadyExists {
		return fmt.Errorf("setting %q: %w", s.ID, ErrExists)
	}
	if err != nil && !errors.Is(err, ErrUnknownTenant) {
		return fmt.Errorf("settings: add setting %q: %w", s.ID, err)
	}
	return err
}

// EnableTenant sets tenants/{id}.enabled; ErrNotFound if there is no such tenant. A disabled
// tenant's settings are skipped at each tick (dead letter reason tenant_disabled).
func (a Admin) EnableTenant(ctx context.Context, id string, on bool) error {
	return a.enable(ctx, model.Tenants, "tenant", id, on)
}

// EnableSetting sets syncSettings/{id}.enabled; ErrNotFound if there is no such setting. Its
// watermark stays: enabled again, the next Job covers the time it was disabled.
func (a Admin) EnableSetting(ctx context.Context, id string, on bool) error {
	return a.enable(ctx, model.SyncSettings, "setting", id, on)
}

func (a Admin) enable(ctx context.Context, coll, what, id string, on bool) error {
	if id == "" {
		return fmt.Errorf("%w: no %s ID", ErrInvalid, what)
	}
	_, err := a.FS.Collection(coll).Doc(id).Update(ctx, []firestore.Update{{Path: "enabled", Value: on}})
	if status.Code(err) == codes.NotFound {
		return fmt.Errorf("%s %q: %w", what, id, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("settings: enable %s %q: %w", what, id, err)
	}
	return nil
}

// Tenant reads one tenant.
func (a Admin) Tenant(ctx context.Context, id string) (model.Tenant, error) {
	var t model.Tenant
	err := a.get(ctx, model.Tenants, "tenant", id, &t)
	t.ID = id
	return t, err
}

// Setting reads one setting.
func (a Admin) Setting(ctx context.Context, id string) (model.SyncSetting, error) {
	var s model.SyncSetting
	err := a.get(ctx, model.SyncSettings, "setting", id, &s)
	s.ID = id
	return s, err
}

func (a Admin) get(ctx context.Context, coll, what, id string, into any) error {
	if id == "" {
		return fmt.Errorf("%w: no %s ID", ErrInvalid, what)
	}
	snap, err := a.FS.Collection(coll).Doc(id).Get(ctx)
	if status.Code(err) == codes.NotFound {
		return fmt.Errorf("%s %q: %w", what, id, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("settings: read %s %q: %w", what, id, err)
	}
	if err := snap.DataTo(into); err != nil {
		return fmt.Errorf("settings: %s %q: %w", what, id, err)
	}
	return nil
}

// Tenants lists every tenant, by ID.
func (a Admin) Tenants(ctx context.Context) ([]model.Tenant, error) {
	return list(ctx, a.FS.Collection(model.Tenants).Query, "tenant", func(t *model.Tenant, id string) { t.ID = id })
}

// Settings lists the settings of tenant (every setting when tenant is empty), by ID.
func (a Admin) Settings(ctx context.Context, tenant string) ([]model.SyncSetting, error) {
	q := a.FS.Collection(model.SyncSettings).Query
	if tenant != "" {
		q = q.Where("tenantId", "==", tenant)
	}
	return list(ctx, q, "setting", func(s *model.SyncSetting, id string) { s.ID = id })
}

// list reads q's documents into Ts, sorted by document ID (Firestore's order), each given its ID.
func list[T any](ctx context.Context, q firestore.Query, what string, setID func(*T, string)) ([]T, error) {
	docs, err := q.OrderBy(firestore.DocumentID, firestore.Asc).Documents(ctx).GetAll()
	if err != nil {
		return nil, fmt.Errorf("settings: list %ss: %w", what, err)
	}
	out := make([]T, len(docs))
	for i, d := range docs {
		if err := d.DataTo(&out[i]); err != nil {
			return nil, fmt.Errorf("settings: %s %q: %w", what, d.Ref.ID, err)
		}
		setID(&out[i], d.Ref.ID)
	}
	return out, nil
}

// Publisher publishes messages to a topic (shared/bus.PubSub).
type Publisher interface {
	Publish(ctx context.Context, topic string, msgs ...bus.Message) ([]string, error)
}

// Resync asks for the window [From, To) of a setting to be imported again; Full means from the
// beginning up to the setting's watermark (From and To unset). Label tells a request from an
// earlier one of the same window.
type Resync struct {
	Setting  string
	From, To time.Time
	Full     bool
	Label    string
}

// ResyncResult is what a Resync did.
type ResyncResult struct {
	Job       model.Job
	Created   bool // this request created the Job (else it existed: the request was sent before)
	Published bool // its expand message was published (not when the Job is finished already)
}

// Resync creates the resync Job of r once (store.CreateResyncJob: the same request, the same
// Job; the watermark untouched) and publishes its expand message to topic unless the Job is
// COMPLETED or FAILED. Sent again while the Job runs, it publishes again: the expander's key
// suppresses the copy if the expansion is alive, and a lost first message is replaced.
func (a Admin) Resync(ctx context.Context, pub Publisher, topic string, r Resync, defaultChunkSize int) (ResyncResult, error) {
	st, err := a.Setting(ctx, r.Setting)
	if err != nil {
		return ResyncResult{}, err
	}
	from, to := r.From, r.To
	switch {
	case r.Full && !(from.IsZero() && to.IsZero()):
		return ResyncResult{}, fmt.Errorf("%w: a full resync takes no window", ErrInvalid)
	case r.Full:
		to = st.Watermark // read outside the transaction: a tick meanwhile only moves it further
	case to.IsZero():
		return ResyncResult{}, fmt.Errorf("%w: a resync needs a window, or Full", ErrInvalid)
	}
	// A disabled tenant's Jobs are dead-lettered by the expander: refuse the request instead.
	if t, err := a.Tenant(ctx, st.TenantID); errors.Is(err, ErrNotFound) {
		return ResyncResult{}, fmt.Errorf("setting %q: tenant %q: %w", r.Setting, st.TenantID, ErrUnknownTenant)
	} else if err != nil {
		return ResyncResult{}, err
	} else if !t.Enabled {
		return ResyncResult{}, fmt.Errorf("%w: setting %q: tenant %q is disabled (tenants enable %s first)", ErrInvalid, r.Setting, t.ID, t.ID)
	}
	now := a.Now
	if now == nil {
		now = time.Now
	}
	job, created, err := store.New(a.FS, now).CreateResyncJob(ctx, r.Setting, from, to, r.Label, defaultChunkSize)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return ResyncResult{}, fmt.Errorf("setting %q: %w", r.Setting, ErrNotFound)
	case errors.Is(err, store.ErrBeyondWatermark), errors.Is(err, store.ErrEmptyWindow):
		return ResyncResult{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	case err != nil:
		return ResyncResult{}, fmt.Errorf("settings: resync: %w", err)
	}
	res := ResyncResult{Job: job, Created: created}
	if job.Status == model.JobCompleted || job.Status == model.JobFailed {
		return res, nil
	}
	if _, err := pub.Publish(ctx, topic, bus.Expand(job)); err != nil {
		return res, fmt.Errorf("settings: resync Job %s: publish: %w", job.ID, err)
	}
	res.Published = true
	return res, nil
}
