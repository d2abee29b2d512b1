# Firestore (native mode), the TTL policies on idempotency keys, and every composite index the
# code's queries need (shared/model: TTLCollections, ExpireAtField, CompositeIndexes; the drift
# test fails when these and the code disagree).

resource "google_firestore_database" "main" {
  project     = var.project
  name        = var.firestore_database
  location_id = coalesce(var.firestore_location, var.region)
  type        = "FIRESTORE_NATIVE"

  delete_protection_state = var.firestore_delete_protection ? "DELETE_PROTECTION_ENABLED" : "DELETE_PROTECTION_DISABLED"
  deletion_policy         = var.firestore_delete_protection ? "ABANDON" : "DELETE"

  depends_on = [google_project_service.enabled]
}

# Idempotency keys and their duplicate-delivery counters are deleted after their expireAt, which
# the functions set to now plus ONCESYNC_KEY_RETENTION. TTL deletion runs within about a day of
# expiry, never before. No single-field indexes on expireAt (index_config {}): both collections
# are read by document ID, never queried by expiry, and an index on an ever-increasing timestamp
# is a write hotspot.
resource "google_firestore_field" "idempotency_keys_ttl" {
  project    = var.project
  database   = google_firestore_database.main.name
  collection = "idempotencyKeys"
  field      = "expireAt"

  ttl_config {}
  index_config {}
}

resource "google_firestore_field" "deliveries_ttl" {
  project    = var.project
  database   = google_firestore_database.main.name
  collection = "deliveries"
  field      = "expireAt"

  ttl_config {}
  index_config {}
}

# Single-field index exemptions (index_config {} = no indexes) for fields never queried:
#   - chunks.records holds every source field of up to a chunk's worth of rows; indexing it would
#     cost an index entry per row and field and could pass Firestore's 40,000 index entries per
#     document;
#   - the target records' free-form source fields;
#   - importedAt and version only ever increase: indexed, they are a write hotspot that caps a
#     collection near 500 writes/s.
locals {
  unindexed_fields = {
    chunks_records           = { collection = "chunks", field = "records" }
    engagements_fields       = { collection = "engagements", field = "fields" }
    engagements_imported_at  = { collection = "engagements", field = "importedAt" }
    engagements_version      = { collection = "engagements", field = "version" }
    engagements_gen_fields   = { collection = "engagementsGen", field = "fields" }
    engagements_gen_imported = { collection = "engagementsGen", field = "importedAt" }
    engagements_gen_version  = { collection = "engagementsGen", field = "version" }
    engagement_index_version = { collection = "engagementIndex", field = "version" }
  }
}

resource "google_firestore_field" "unindexed" {
  for_each = local.unindexed_fields

  project    = var.project
  database   = google_firestore_database.main.name
  collection = each.value.collection
  field      = each.value.field

  index_config {}
}

# Recovery sweep: unfinished Jobs by status, oldest first.
resource "google_firestore_index" "jobs_status_created_at" {
  project     = var.project
  database    = google_firestore_database.main.name
  collection  = "jobs"
  query_scope = "COLLECTION"

  fields {
    field_path = "status"
    order      = "ASCENDING"
  }
  fields {
    field_path = "createdAt"
    order      = "ASCENDING"
  }
}

# Audit: a tenant's Jobs in creation order.
resource "google_firestore_index" "jobs_tenant_created_at" {
  project     = var.project
  database    = google_firestore_database.main.name
  collection  = "jobs"
  query_scope = "COLLECTION"

  fields {
    field_path = "tenantId"
    order      = "ASCENDING"
  }
  fields {
    field_path = "createdAt"
    order      = "ASCENDING"
  }
}

# Audit: upsert-target records of one tenant and source object, by external ID.
resource "google_firestore_index" "engagements_tenant_object_external_id" {
  project     = var.project
  database    = google_firestore_database.main.name
  collection  = "engagements"
  query_scope = "COLLECTION"

  fields {
    field_path = "tenantId"
    order      = "ASCENDING"
  }
  fields {
    field_path = "sourceObject"
    order      = "ASCENDING"
  }
  fields {
    field_path = "externalId"
    order      = "ASCENDING"
  }
}

# Audit: generated-ID target records of one tenant and source object, by external ID.
resource "google_firestore_index" "engagements_gen_tenant_object_external_id" {
  project     = var.project
  database    = google_firestore_database.main.name
  collection  = "engagementsGen"
  query_scope = "COLLECTION"

  fields {
    field_path = "tenantId"
    order      = "ASCENDING"
  }
  fields {
    field_path = "sourceObject"
    order      = "ASCENDING"
  }
  fields {
    field_path = "externalId"
    order      = "ASCENDING"
  }
}
