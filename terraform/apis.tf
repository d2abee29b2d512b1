# APIs the bundle needs. Destroying this configuration leaves them enabled
# (disable_on_destroy = false): other things in the project may rely on them.
locals {
  services = toset([
    "artifactregistry.googleapis.com",     # function images
    "cloudbuild.googleapis.com",           # builds the function source
    "cloudkms.googleapis.com",             # the key that encrypts the credentials keyset
    "cloudfunctions.googleapis.com",       # the three functions
    "cloudresourcemanager.googleapis.com", # data.google_project
    "cloudscheduler.googleapis.com",       # the tick
    "cloudtrace.googleapis.com",           # one trace per tick, across the functions
    "eventarc.googleapis.com",             # Pub/Sub triggers
    "firestore.googleapis.com",            # state
    "iam.googleapis.com",                  # service accounts
    "logging.googleapis.com",              # function and build logs
    "monitoring.googleapis.com",           # metrics, alert policies, the dashboard
    "pubsub.googleapis.com",               # topics
    "run.googleapis.com",                  # functions (2nd gen) run on Cloud Run
    "secretmanager.googleapis.com",        # the source token, the encrypted credentials keyset
    "storage.googleapis.com",              # the source bucket
  ])
}

resource "google_project_service" "enabled" {
  for_each = local.services

  project                    = var.project
  service                    = each.value
  disable_on_destroy         = false
  disable_dependent_services = false
}

data "google_project" "this" {
  project_id = var.project

  depends_on = [google_project_service.enabled]
}
