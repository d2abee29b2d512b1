# Identities and least privilege.
#
#   runtime SA (one per function)  Firestore user on the project (Firestore has no narrower
#                                  resource to grant on), publisher on exactly the topics its
#                                  code publishes to, secret accessor on the source token
#                                  (expander only).
#   trigger SA (one per function)  run.invoker on its own function's Cloud Run service only.
#   build SA (shared)              writes logs and the function images, reads the build sources.
#
# Only additive *_iam_member resources: nothing here can remove someone else's binding, and
# nothing is granted to allUsers or allAuthenticatedUsers.

# --- Runtime service accounts ---------------------------------------------------------------

resource "google_service_account" "scheduler" {
  project      = var.project
  account_id   = "${var.name_prefix}-scheduler"
  display_name = "${var.name_prefix} Scheduler function"

  depends_on = [google_project_service.enabled]
}

resource "google_service_account" "expander" {
  project      = var.project
  account_id   = "${var.name_prefix}-expander"
  display_name = "${var.name_prefix} Expander function"

  depends_on = [google_project_service.enabled]
}

resource "google_service_account" "importer" {
  project      = var.project
  account_id   = "${var.name_prefix}-importer"
  display_name = "${var.name_prefix} Importer function"

  depends_on = [google_project_service.enabled]
}

# The bulk lane's importer: the same code as the importer, its own identity and instances.
resource "google_service_account" "importer_bulk" {
  project      = var.project
  account_id   = "${var.name_prefix}-bulk-importer"
  display_name = "${var.name_prefix} ImporterBulk function"

  depends_on = [google_project_service.enabled]
}

resource "google_project_iam_member" "scheduler_firestore" {
  project = var.project
  role    = "roles/datastore.user"
  member  = "serviceAccount:${google_service_account.scheduler.email}"
}

resource "google_project_iam_member" "expander_firestore" {
  project = var.project
  role    = "roles/datastore.user"
  member  = "serviceAccount:${google_service_account.expander.email}"
}

resource "google_project_iam_member" "importer_firestore" {
  project = var.project
  role    = "roles/datastore.user"
  member  = "serviceAccount:${google_service_account.importer.email}"
}

resource "google_project_iam_member" "importer_bulk_firestore" {
  project = var.project
  role    = "roles/datastore.user"
  member  = "serviceAccount:${google_service_account.importer_bulk.email}"
}

# Each function writes its deliveries' spans to Cloud Trace (a project-level role: traces have no
# finer resource to grant it on).
resource "google_project_iam_member" "scheduler_trace" {
  project = var.project
  role    = "roles/cloudtrace.agent"
  member  = "serviceAccount:${google_service_account.scheduler.email}"
}

resource "google_project_iam_member" "expander_trace" {
  project = var.project
  role    = "roles/cloudtrace.agent"
  member  = "serviceAccount:${google_service_account.expander.email}"
}

resource "google_project_iam_member" "importer_trace" {
  project = var.project
  role    = "roles/cloudtrace.agent"
  member  = "serviceAccount:${google_service_account.importer.email}"
}

resource "google_project_iam_member" "importer_bulk_trace" {
  project = var.project
  role    = "roles/cloudtrace.agent"
  member  = "serviceAccount:${google_service_account.importer_bulk.email}"
}

# Each function writes its metrics to Cloud Monitoring (project-level, as for traces).
resource "google_project_iam_member" "scheduler_metrics" {
  project = var.project
  role    = "roles/monitoring.metricWriter"
  member  = "serviceAccount:${google_service_account.scheduler.email}"
}

resource "google_project_iam_member" "expander_metrics" {
  project = var.project
  role    = "roles/monitoring.metricWriter"
  member  = "serviceAccount:${google_service_account.expander.email}"
}

resource "google_project_iam_member" "importer_metrics" {
  project = var.project
  role    = "roles/monitoring.metricWriter"
  member  = "serviceAccount:${google_service_account.importer.email}"
}

resource "google_project_iam_member" "importer_bulk_metrics" {
  project = var.project
  role    = "roles/monitoring.metricWriter"
  member  = "serviceAccount:${google_service_account.importer_bulk.email}"
}

# Scheduler publishes a tick's parts to ticks (its own trigger: units of settings, sweep pages),
# Jobs to expand, stuck chunks to their Job's lane (recovery sweep), dead letters.
resource "google_pubsub_topic_iam_member" "scheduler_ticks" {
  project = var.project
  topic   = google_pubsub_topic.ticks.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.scheduler.email}"
}

resource "google_pubsub_topic_iam_member" "scheduler_expand" {
  project = var.project
  topic   = google_pubsub_topic.expand.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.scheduler.email}"
}

resource "google_pubsub_topic_iam_member" "scheduler_chunks" {
  project = var.project
  topic   = google_pubsub_topic.chunks.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.scheduler.email}"
}

resource "google_pubsub_topic_iam_member" "scheduler_chunks_bulk" {
  project = var.project
  topic   = google_pubsub_topic.chunks_bulk.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.scheduler.email}"
}

resource "google_pubsub_topic_iam_member" "scheduler_deadletters" {
  project = var.project
  topic   = google_pubsub_topic.deadletters.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.scheduler.email}"
}

# Expander publishes chunks (to either lane), its own continuations and dead letters.
resource "google_pubsub_topic_iam_member" "expander_expand" {
  project = var.project
  topic   = google_pubsub_topic.expand.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.expander.email}"
}

resource "google_pubsub_topic_iam_member" "expander_chunks" {
  project = var.project
  topic   = google_pubsub_topic.chunks.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.expander.email}"
}

resource "google_pubsub_topic_iam_member" "expander_chunks_bulk" {
  project = var.project
  topic   = google_pubsub_topic.chunks_bulk.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.expander.email}"
}

resource "google_pubsub_topic_iam_member" "expander_deadletters" {
  project = var.project
  topic   = google_pubsub_topic.deadletters.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.expander.email}"
}

# The importers publish dead letters only.
resource "google_pubsub_topic_iam_member" "importer_deadletters" {
  project = var.project
  topic   = google_pubsub_topic.deadletters.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.importer.email}"
}

resource "google_pubsub_topic_iam_member" "importer_bulk_deadletters" {
  project = var.project
  topic   = google_pubsub_topic.deadletters.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.importer_bulk.email}"
}

# --- Trigger service accounts ---------------------------------------------------------------
# Eventarc's push subscription authenticates as the trigger SA; it may invoke its own function.

resource "google_service_account" "scheduler_trigger" {
  project      = var.project
  account_id   = "${var.name_prefix}-scheduler-trigger"
  display_name = "${var.name_prefix} Scheduler Eventarc trigger"

  depends_on = [google_project_service.enabled]
}

resource "google_service_account" "expander_trigger" {
  project      = var.project
  account_id   = "${var.name_prefix}-expander-trigger"
  display_name = "${var.name_prefix} Expander Eventarc trigger"

  depends_on = [google_project_service.enabled]
}

resource "google_service_account" "importer_trigger" {
  project      = var.project
  account_id   = "${var.name_prefix}-importer-trigger"
  display_name = "${var.name_prefix} Importer Eventarc trigger"

  depends_on = [google_project_service.enabled]
}

resource "google_service_account" "importer_bulk_trigger" {
  project      = var.project
  account_id   = "${var.name_prefix}-bulk-trigger"
  display_name = "${var.name_prefix} ImporterBulk Eventarc trigger"

  depends_on = [google_project_service.enabled]
}

# A 2nd gen function is served by the Cloud Run service of the same name; invoking it takes
# run.invoker on that service.
resource "google_cloud_run_v2_service_iam_member" "scheduler_trigger_invoker" {
  project  = var.project
  location = google_cloudfunctions2_function.scheduler.location
  name     = google_cloudfunctions2_function.scheduler.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.scheduler_trigger.email}"
}

resource "google_cloud_run_v2_service_iam_member" "expander_trigger_invoker" {
  project  = var.project
  location = google_cloudfunctions2_function.expander.location
  name     = google_cloudfunctions2_function.expander.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.expander_trigger.email}"
}

resource "google_cloud_run_v2_service_iam_member" "importer_trigger_invoker" {
  project  = var.project
  location = google_cloudfunctions2_function.importer.location
  name     = google_cloudfunctions2_function.importer.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.importer_trigger.email}"
}

resource "google_cloud_run_v2_service_iam_member" "importer_bulk_trigger_invoker" {
  project  = var.project
  location = google_cloudfunctions2_function.importer_bulk.location
  name     = google_cloudfunctions2_function.importer_bulk.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.importer_bulk_trigger.email}"
}

# Projects whose Pub/Sub service agent dates from before 2021-04-08 need it to be able to mint
# tokens for the trigger SAs. Granted on each trigger SA, not on the project.
locals {
  pubsub_service_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
  trigger_service_accounts = {
    scheduler     = google_service_account.scheduler_trigger.name
    expander      = google_service_account.expander_trigger.name
    importer      = google_service_account.importer_trigger.name
    importer_bulk = google_service_account.importer_bulk_trigger.name
  }
}

resource "google_service_account_iam_member" "pubsub_token_creator" {
  for_each = var.legacy_pubsub_token_creator ? local.trigger_service_accounts : {}

  service_account_id = each.value
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_service_agent
}

# --- Build service account ------------------------------------------------------------------
# Cloud Build runs the function builds as this account instead of the project's default one.

resource "google_service_account" "build" {
  project      = var.project
  account_id   = "${var.name_prefix}-build"
  display_name = "${var.name_prefix} function builds"

  depends_on = [google_project_service.enabled]
}

resource "google_project_iam_member" "build_log_writer" {
  project = var.project
  role    = "roles/logging.logWriter"
  member  = "serviceAccount:${google_service_account.build.email}"
}

# Cloud Functions copies the uploaded source into its own gcf-v2-sources-* bucket before the
# build reads it; that bucket is not managed here, so the read grant is project-wide.
resource "google_project_iam_member" "build_object_viewer" {
  project = var.project
  role    = "roles/storage.objectViewer"
  member  = "serviceAccount:${google_service_account.build.email}"
}

resource "google_artifact_registry_repository_iam_member" "build_writer" {
  project    = var.project
  location   = google_artifact_registry_repository.functions.location
  repository = google_artifact_registry_repository.functions.name
  role       = "roles/artifactregistry.writer"
  member     = "serviceAccount:${google_service_account.build.email}"
}
