output "functions" {
  description = "Each function's name, runtime service account and trigger service account, by entry point."
  value = {
    Scheduler = {
      name            = google_cloudfunctions2_function.scheduler.name
      service_account = google_service_account.scheduler.email
      trigger_account = google_service_account.scheduler_trigger.email
    }
    Expander = {
      name            = google_cloudfunctions2_function.expander.name
      service_account = google_service_account.expander.email
      trigger_account = google_service_account.expander_trigger.email
    }
    Importer = {
      name            = google_cloudfunctions2_function.importer.name
      service_account = google_service_account.importer.email
      trigger_account = google_service_account.importer_trigger.email
    }
    ImporterBulk = {
      name            = google_cloudfunctions2_function.importer_bulk.name
      service_account = google_service_account.importer_bulk.email
      trigger_account = google_service_account.importer_bulk_trigger.email
    }
  }
}

output "topics" {
  description = "Pub/Sub topic IDs of the pipeline and of the dead letters."
  value = {
    ticks       = google_pubsub_topic.ticks.name
    expand      = google_pubsub_topic.expand.name
    chunks      = google_pubsub_topic.chunks.name
    chunks_bulk = google_pubsub_topic.chunks_bulk.name
    deadletters = google_pubsub_topic.deadletters.name
  }
}

output "dead_letter_subscription" {
  description = "Pull subscription that retains every dead letter for inspection and replay."
  value       = google_pubsub_subscription.deadletters.name
}

output "scheduler_job" {
  description = "Cloud Scheduler job that publishes the ticks."
  value       = google_cloud_scheduler_job.tick.name
}

output "source_bucket" {
  description = "Bucket holding the zipped function source."
  value       = google_storage_bucket.source.name
}

output "firestore_database" {
  description = "Firestore database ID."
  value       = google_firestore_database.main.name
}

output "run_tick_now" {
  description = "Command that makes Cloud Scheduler publish one tick now."
  value       = "gcloud scheduler jobs run ${google_cloud_scheduler_job.tick.name} --location=${var.region} --project=${var.project}"
}

output "credentials_kms_key" {
  description = "The Cloud KMS key that encrypts the credentials keyset (oncesync-ops keyset create --kms-key gcp-kms://<this>)."
  value       = google_kms_crypto_key.credentials.id
}
