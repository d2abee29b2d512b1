# The pipeline: Cloud Scheduler -> ticks -> Scheduler -> expand -> Expander -> chunks -> Importer,
# and for bulk Jobs (more than bulk_after_records rows) Expander -> chunks-bulk -> ImporterBulk.
# Each function is subscribed to its topic by the Eventarc trigger it declares.
#
# Dead letters. Eventarc creates and owns the push subscription behind each trigger, and neither
# google_cloudfunctions2_function nor google_eventarc_trigger can give it a dead_letter_policy
# (hashicorp/terraform-provider-google#17697 and #25069 are open feature requests); patching it
# with gcloud afterwards would be drift that any trigger change silently undoes. So dead-lettering
# happens in the application: a message that still fails ONCESYNC_MAX_DELIVERY_AGE after it was
# published is recorded in Firestore (deadLetters), published to the dead-letter topic below, and
# acknowledged, before Eventarc's 24 h retention would drop it. The README's Deploy section
# explains the trade-off against an explicit push subscription with a dead_letter_policy.

resource "google_pubsub_topic" "ticks" {
  project = var.project
  name    = "${var.name_prefix}-ticks"

  depends_on = [google_project_service.enabled]
}

resource "google_pubsub_topic" "expand" {
  project = var.project
  name    = "${var.name_prefix}-expand"

  depends_on = [google_project_service.enabled]
}

resource "google_pubsub_topic" "chunks" {
  project = var.project
  name    = "${var.name_prefix}-chunks"

  depends_on = [google_project_service.enabled]
}

# The bulk lane: chunks of Jobs whose window counts more than bulk_after_records rows, imported by
# a function of their own, so a small tenant's chunks never queue behind a bulk backlog.
resource "google_pubsub_topic" "chunks_bulk" {
  project = var.project
  name    = "${var.name_prefix}-chunks-bulk"

  depends_on = [google_project_service.enabled]
}

resource "google_pubsub_topic" "deadletters" {
  project = var.project
  name    = "${var.name_prefix}-deadletters"

  # Topic retention lets a subscription created later (or one that was seeked) still see the
  # dead letters of the last dead_letter_retention_days.
  message_retention_duration = "${var.dead_letter_retention_days * 86400}s"

  depends_on = [google_project_service.enabled]
}

# A pull subscription nobody consumes automatically: it holds every dead letter for inspection
# and replay. A topic without a subscription would retain nothing for it.
resource "google_pubsub_subscription" "deadletters" {
  project = var.project
  name    = "${var.name_prefix}-deadletters-inspect"
  topic   = google_pubsub_topic.deadletters.id

  ack_deadline_seconds       = 60
  message_retention_duration = "${var.dead_letter_retention_days * 86400}s"
  retain_acked_messages      = true # acknowledged while inspecting? `seek` brings them back

  expiration_policy {
    ttl = "" # never expire, however long nobody looks
  }
}
