# The four functions (Cloud Functions 2nd gen): the scheduler, the expander and an importer per
# lane (the bulk lane's is the same code on its own topic, with instances of its own). Each one:
#   - builds from the shared source zip with the Go runtime matching go.mod,
#   - runs as its own service account with only the roles it needs (iam.tf),
#   - is triggered by an Eventarc Pub/Sub trigger that retries failures, with a trigger service
#     account allowed to invoke that one function and nothing else,
#   - accepts internal traffic only (Eventarc's push from this project is internal),
#   - gets exactly the environment shared/config reads for its entry point (the drift test
#     compares the two in both directions).

locals {
  # "go" + go.mod's major and minor version: go 1.26 -> go126.
  go_runtime = "go126"

  # Variables every entry point reads.
  common_env = {
    ONCESYNC_PROJECT            = var.project
    ONCESYNC_DATABASE           = google_firestore_database.main.name
    ONCESYNC_LEASE              = "${var.lease_minutes}m"
    ONCESYNC_KEY_RETENTION      = "${var.key_retention_hours}h"
    ONCESYNC_TOPIC_DEADLETTERS  = google_pubsub_topic.deadletters.name
    ONCESYNC_MAX_DELIVERY_AGE   = "${var.max_delivery_age_minutes}m"
    ONCESYNC_TRACES             = var.trace_sample_ratio > 0 ? "cloudtrace" : "none"
    ONCESYNC_TRACE_SAMPLE_RATIO = tostring(var.trace_sample_ratio)
    ONCESYNC_METRICS            = "cloudmonitoring"
  }
}

resource "google_cloudfunctions2_function" "scheduler" {
  project     = var.project
  location    = var.region
  name        = "${var.name_prefix}-scheduler"
  description = "On each tick: one Job per enabled sync setting, published to the expand topic; re-publishes stuck work."

  build_config {
    runtime           = local.go_runtime
    entry_point       = "Scheduler"
    service_account   = google_service_account.build.id
    docker_repository = google_artifact_registry_repository.functions.id

    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    service_account_email            = google_service_account.scheduler.email
    ingress_settings                 = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision   = true
    timeout_seconds                  = var.scheduler.timeout_seconds
    available_memory                 = var.scheduler.memory
    available_cpu                    = var.scheduler.cpu
    min_instance_count               = var.scheduler.min_instances
    max_instance_count               = var.scheduler.max_instances
    max_instance_request_concurrency = var.scheduler.concurrency

    environment_variables = merge(local.common_env, {
      ONCESYNC_TOPIC_TICKS        = google_pubsub_topic.ticks.name
      ONCESYNC_TOPIC_EXPAND       = google_pubsub_topic.expand.name
      ONCESYNC_TOPIC_CHUNKS       = google_pubsub_topic.chunks.name
      ONCESYNC_TOPIC_CHUNKS_BULK  = google_pubsub_topic.chunks_bulk.name
      ONCESYNC_DEFAULT_CHUNK_SIZE = tostring(var.chunk_size)
      ONCESYNC_FUNCTION_TIMEOUT   = "${var.scheduler.timeout_seconds}s"
      ONCESYNC_BUDGET_PERCENT     = tostring(var.expansion_budget_percent)
      ONCESYNC_STUCK_AFTER        = "${var.stuck_after_minutes}m"
      ONCESYNC_WINDOW_LAG         = "${var.window_lag_seconds}s"
      ONCESYNC_SWEEP_LIMIT        = tostring(var.sweep_limit)
      ONCESYNC_TICK_UNIT          = tostring(var.tick_unit_size)
    })
  }

  event_trigger {
    trigger_region        = var.region
    event_type            = "google.cloud.pubsub.topic.v1.messagePublished"
    pubsub_topic          = google_pubsub_topic.ticks.id
    retry_policy          = "RETRY_POLICY_RETRY"
    service_account_email = google_service_account.scheduler_trigger.email
  }

  # The roles must exist before the first event arrives.
  depends_on = [
    google_project_iam_member.scheduler_firestore,
    google_pubsub_topic_iam_member.scheduler_ticks,
    google_pubsub_topic_iam_member.scheduler_expand,
    google_pubsub_topic_iam_member.scheduler_chunks,
    google_pubsub_topic_iam_member.scheduler_chunks_bulk,
    google_pubsub_topic_iam_member.scheduler_deadletters,
    google_artifact_registry_repository_iam_member.build_writer,
    google_project_iam_member.build_log_writer,
    google_project_iam_member.build_object_viewer,
  ]
}

resource "google_cloudfunctions2_function" "expander" {
  project     = var.project
  location    = var.region
  name        = "${var.name_prefix}-expander"
  description = "Plans one Job: pages through the source search and writes its chunks, published to the chunks topic."

  build_config {
    runtime           = local.go_runtime
    entry_point       = "Expander"
    service_account   = google_service_account.build.id
    docker_repository = google_artifact_registry_repository.functions.id

    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    service_account_email            = google_service_account.expander.email
    ingress_settings                 = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision   = true
    timeout_seconds                  = var.expander.timeout_seconds
    available_memory                 = var.expander.memory
    available_cpu                    = var.expander.cpu
    min_instance_count               = var.expander.min_instances
    max_instance_count               = var.expander.max_instances
    max_instance_request_concurrency = var.expander.concurrency

    environment_variables = merge(local.common_env, {
      ONCESYNC_TOPIC_EXPAND       = google_pubsub_topic.expand.name
      ONCESYNC_TOPIC_CHUNKS       = google_pubsub_topic.chunks.name
      ONCESYNC_TOPIC_CHUNKS_BULK  = google_pubsub_topic.chunks_bulk.name
      ONCESYNC_BULK_AFTER         = tostring(var.bulk_after_records)
      ONCESYNC_SOURCE_KIND        = var.source_kind
      ONCESYNC_PAGE_SIZE          = tostring(var.page_size)
      ONCESYNC_SOURCE_TIMEOUT     = "${var.source_timeout_seconds}s"
      ONCESYNC_MAX_CHUNK_BYTES    = tostring(var.max_chunk_bytes)
      ONCESYNC_FUNCTION_TIMEOUT   = "${var.expander.timeout_seconds}s"
      ONCESYNC_BUDGET_PERCENT     = tostring(var.expansion_budget_percent)
      ONCESYNC_SLICE_ROWS         = tostring(var.slice_rows)
      ONCESYNC_MAX_SLICES         = tostring(var.max_slices)
      ONCESYNC_SEARCH_CONCURRENCY = tostring(var.search_concurrency)
      ONCESYNC_PARALLEL_AFTER     = "${var.parallel_search_after_ms}ms"
      ONCESYNC_KEYSET             = "/etc/oncesync/keyset/keyset.json"
      ONCESYNC_TOKEN_MAX_AGE      = "${var.token_max_age_minutes}m"
      ONCESYNC_KEYSET_KMS_KEY     = "gcp-kms://${google_kms_crypto_key.credentials.id}"
    })

    # The credentials keyset, encrypted by the KMS key, read from Secret Manager as a file.
    secret_volumes {
      mount_path = "/etc/oncesync/keyset"
      project_id = var.project
      secret     = google_secret_manager_secret.credentials_keyset.secret_id
      versions {
        version = "latest"
        path    = "keyset.json"
      }
    }
  }

  event_trigger {
    trigger_region        = var.region
    event_type            = "google.cloud.pubsub.topic.v1.messagePublished"
    pubsub_topic          = google_pubsub_topic.expand.id
    retry_policy          = "RETRY_POLICY_RETRY"
    service_account_email = google_service_account.expander_trigger.email
  }

  depends_on = [
    google_project_iam_member.expander_firestore,
    google_pubsub_topic_iam_member.expander_chunks,
    google_pubsub_topic_iam_member.expander_chunks_bulk,
    google_pubsub_topic_iam_member.expander_deadletters,
    google_secret_manager_secret_iam_member.expander_credentials_keyset,
    google_kms_crypto_key_iam_member.expander_credentials,
    google_artifact_registry_repository_iam_member.build_writer,
    google_project_iam_member.build_log_writer,
    google_project_iam_member.build_object_viewer,
  ]
}

resource "google_cloudfunctions2_function" "importer" {
  project     = var.project
  location    = var.region
  name        = "${var.name_prefix}-importer"
  description = "Imports one chunk into the target collection, exactly once per record version."

  build_config {
    runtime           = local.go_runtime
    entry_point       = "Importer"
    service_account   = google_service_account.build.id
    docker_repository = google_artifact_registry_repository.functions.id

    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    service_account_email            = google_service_account.importer.email
    ingress_settings                 = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision   = true
    timeout_seconds                  = var.importer.timeout_seconds
    available_memory                 = var.importer.memory
    available_cpu                    = var.importer.cpu
    min_instance_count               = var.importer.min_instances
    max_instance_count               = var.importer.max_instances
    max_instance_request_concurrency = var.importer.concurrency

    environment_variables = local.common_env
  }

  event_trigger {
    trigger_region        = var.region
    event_type            = "google.cloud.pubsub.topic.v1.messagePublished"
    pubsub_topic          = google_pubsub_topic.chunks.id
    retry_policy          = "RETRY_POLICY_RETRY"
    service_account_email = google_service_account.importer_trigger.email
  }

  depends_on = [
    google_project_iam_member.importer_firestore,
    google_pubsub_topic_iam_member.importer_deadletters,
    google_artifact_registry_repository_iam_member.build_writer,
    google_project_iam_member.build_log_writer,
    google_project_iam_member.build_object_viewer,
  ]
}

# The bulk lane's importer: the Importer's code (entry point ImporterBulk), triggered by the bulk
# topic, sized on its own (var.importer_bulk), so bulk Jobs' chunks neither take the standard
# lane's instances nor wait for them.
resource "google_cloudfunctions2_function" "importer_bulk" {
  project     = var.project
  location    = var.region
  name        = "${var.name_prefix}-importer-bulk"
  description = "Imports one chunk of a bulk Job into the target collection, exactly once per record version."

  build_config {
    runtime           = local.go_runtime
    entry_point       = "ImporterBulk"
    service_account   = google_service_account.build.id
    docker_repository = google_artifact_registry_repository.functions.id

    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    service_account_email            = google_service_account.importer_bulk.email
    ingress_settings                 = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision   = true
    timeout_seconds                  = var.importer_bulk.timeout_seconds
    available_memory                 = var.importer_bulk.memory
    available_cpu                    = var.importer_bulk.cpu
    min_instance_count               = var.importer_bulk.min_instances
    max_instance_count               = var.importer_bulk.max_instances
    max_instance_request_concurrency = var.importer_bulk.concurrency

    environment_variables = local.common_env
  }

  event_trigger {
    trigger_region        = var.region
    event_type            = "google.cloud.pubsub.topic.v1.messagePublished"
    pubsub_topic          = google_pubsub_topic.chunks_bulk.id
    retry_policy          = "RETRY_POLICY_RETRY"
    service_account_email = google_service_account.importer_bulk_trigger.email
  }

  depends_on = [
    google_project_iam_member.importer_bulk_firestore,
    google_pubsub_topic_iam_member.importer_bulk_deadletters,
    google_artifact_registry_repository_iam_member.build_writer,
    google_project_iam_member.build_log_writer,
    google_project_iam_member.build_object_viewer,
  ]
}
