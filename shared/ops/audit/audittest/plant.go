// Package audittest plants, in a finished Job, the problems an audit must find: a duplicated
// target record, a lost one, a chunk outside the plan and an expired lease. The audit's tests and
// the CLI's use it; so can a demo that shows what a finding looks like. Never point it at
// production data.
package audittest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"cloud.google.com/go/firestore"

	"github.com/oncesync/oncesync/shared/idem"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/target"
)

// readJob reads the Job as it is now.
func readJob(ctx context.Context, fs *firestore.Client, id string) (model.Job, error) {
	var j model.Job
	snap, err := fs.Collection(model.Jobs).Doc(id).Get(ctx)
	if err != nil {
		return j, fmt.Errorf("audittest: job %s: %w", id, err)
	}
	if err := snap.DataTo(&j); err != nil {
		return j, fmt.Errorf("audittest: job %s: %w", id, err)
	}
	j.ID = id
	return j, nil
}

// chunk reads chunk i of job.
func chunk(ctx context.Context, fs *firestore.Client, job model.Job, i int) (model.Chunk, error) {
	var c model.Chunk
	snap, err := fs.Collection(model.Jobs).Doc(job.ID).Collection(model.Chunks).Doc(model.ChunkID(i)).Get(ctx)
	if err != nil {
		return c, fmt.Errorf("audittest: chunk %d of %s: %w", i, job.ID, err)
	}
	if err := snap.DataTo(&c); err != nil {
		return c, fmt.Errorf("audittest: chunk %d of %s: %w", i, job.ID, err)
	}
	if len(c.Records) == 0 {
		return c, fmt.Errorf("audittest: chunk %d of %s has no records", i, job.ID)
	}
	return c, nil
}

func targetCollection(job model.Job) string {
	k, _ := model.Kind(job.Target)
	return k.Records
}

// Duplicate writes a second target record, under a generated ID, for the first row of the Job's
// chunk 0 — what the incident's second delivery did. It returns the external ID.
func Duplicate(ctx context.Context, fs *firestore.Client, jobID string) (string, error) {
	job, err := readJob(ctx, fs, jobID)
	if err != nil {
		return "", err
	}
	c, err := chunk(ctx, fs, job, 0)
	if err != nil {
		return "", err
	}
	r := target.Newest(c.Records)[0]
	e := model.Engagement{
		TenantID: job.TenantID, SourceObject: job.SourceObject, ExternalID: r.ID, Version: r.Modstamp,
		Fields: r.Fields, JobID: job.ID, Chunk: 0, ImportedAt: c.DoneAt.Add(2 * time.Second),
	}
	if _, err := fs.Collection(targetCollection(job)).NewDoc().Create(ctx, e); err != nil {
		return "", fmt.Errorf("audittest: duplicate %s: %w", r.ID, err)
	}
	return r.ID, nil
}

// Missing deletes the target record of the first row of the Job's last chunk (the index entry of
// a generated-ID record stays). It returns the external ID.
func Missing(ctx context.Context, fs *firestore.Client, jobID string) (string, error) {
	job, err := readJob(ctx, fs, jobID)
	if err != nil {
		return "", err
	}
	if job.ChunkCount == 0 {
		return "", errors.New("audittest: the Job has no chunks")
	}
	c, err := chunk(ctx, fs, job, job.ChunkCount-1)
	if err != nil {
		return "", err
	}
	r := target.Newest(c.Records)[0]
	t, err := target.For(fs, job.Target)
	if err != nil {
		return "", fmt.Errorf("audittest: %w", err)
	}
	kept, _, err := t.Kept(ctx, job.TenantID, job.SourceObject, []string{r.ID})
	if err != nil || kept[r.ID] == nil {
		return "", fmt.Errorf("audittest: the record kept for %s: none (%v)", r.ID, err)
	}
	ref := kept[r.ID]
	if _, err := ref.Delete(ctx, firestore.Exists); err != nil {
		return "", fmt.Errorf("audittest: delete %s: %w", ref.Path, err)
	}
	return r.ID, nil
}

// ExtraChunk writes a chunk document just past the Job's plan, holding a copy of chunk 0's first
// row. It returns its index.
func ExtraChunk(ctx context.Context, fs *firestore.Client, jobID string) (int, error) {
	job, err := readJob(ctx, fs, jobID)
	if err != nil {
		return 0, err
	}
	c, err := chunk(ctx, fs, job, 0)
	if err != nil {
		return 0, err
	}
	i := job.ChunkCount
	extra := model.Chunk{
		Index: i, JobID: job.ID, TenantID: job.TenantID, Status: model.ChunkPending, Records: c.Records[:1], Count: 1,
		LastModstamp: c.Records[0].Modstamp, LastID: c.Records[0].ID, PlannedAt: c.PlannedAt.Add(2 * time.Second),
	}
	ref := fs.Collection(model.Jobs).Doc(job.ID).Collection(model.Chunks).Doc(model.ChunkID(i))
	if _, err := ref.Create(ctx, extra); err != nil {
		return 0, fmt.Errorf("audittest: extra chunk %d of %s: %w", i, job.ID, err)
	}
	return i, nil
}

// ExpiredLease sets the key of the Job's chunk 0 IN_PROGRESS with a lease that ran out an hour
// before now, as a crashed owner leaves it when no redelivery comes. It returns the key.
func ExpiredLease(ctx context.Context, fs *firestore.Client, jobID string, now time.Time) (idem.Key, error) {
	job, err := readJob(ctx, fs, jobID)
	if err != nil {
		return idem.Key{}, err
	}
	k := idem.ChunkKey(job.ID, 0)
	_, err = fs.Collection(model.Keys).Doc(k.DocID()).Set(ctx, map[string]any{
		"key": k.String(), "scope": k.Scope, "state": idem.InProgress, "owner": "Importer/planted/crashed",
		"leaseUntil": now.Add(-time.Hour), "updatedAt": now.Add(-time.Hour - 15*time.Minute),
		"labels": map[string]string{"tenant": job.TenantID, "job": job.ID, "chunk": "0", "messageId": "planted"},
	}, firestore.MergeAll)
	if err != nil {
		return k, fmt.Errorf("audittest: expire lease %s: %w", k, err)
	}
	return k, nil
}
